"""The system (Debian) packages memsig needs beside its Python ones: check them, or install them.

Run by ``make setup`` with the machine's own ``python3`` (standard library only), and imported by
the tests so that a test needing a missing package fails with the same message.

    python3 scripts/system_deps.py            # exit 1 and print the install command if any is missing
    python3 scripts/system_deps.py --install  # install the missing ones with apt where we can (root or
                                              # passwordless sudo on Debian/Ubuntu), else as above
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SystemPackage:
    apt: str  # the Debian package name
    needed_for: str
    present: Callable[[], bool]


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")

PACKAGES = {
    "espeak-ng": SystemPackage(
        "espeak-ng", "synthesised speech (the espeak PTB corpus, LAS)", lambda: shutil.which("espeak-ng") is not None
    ),
    "pocketsphinx-testdata": SystemPackage(
        "pocketsphinx-testdata",
        "five real LibriVox clips (speech tests)",
        lambda: (LIBRIVOX / "transcription").is_file(),
    ),
    "flite": SystemPackage(
        "flite", "a second synthesiser for the speech corpus' voices", lambda: shutil.which("flite") is not None
    ),
    "chromium": SystemPackage(
        "chromium", "a headless browser (the report page's browser test)", lambda: browser() is not None
    ),
}


def browser() -> str | None:
    """The path of a headless-capable browser on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def missing(names: list[str] | None = None) -> list[str]:
    """Names (keys of ``PACKAGES``) of the packages that are not installed."""
    return [name for name in (names or list(PACKAGES)) if not PACKAGES[name].present()]


def install_command(names: list[str]) -> str:
    """The one command that installs ``names`` on Debian/Ubuntu."""
    apt = " ".join(PACKAGES[name].apt for name in names)
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get update && {sudo}apt-get install -y {apt}"


def missing_message(names: list[str]) -> str:
    lines = [f"  {name}: {PACKAGES[name].needed_for}" for name in names]
    return (
        "memsig needs these system packages, which are not installed:\n"
        + "\n".join(lines)
        + f"\nInstall them with:\n  {install_command(names)}\n(or run `make setup` as root or with passwordless sudo)"
    )


def _can_apt() -> list[str] | None:
    """The command prefix that runs apt-get as root here (``[]`` as root, ``["sudo", "-n"]``), or None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install missing packages with apt where possible")
    args = parser.parse_args()
    todo = missing()
    if not todo:
        return 0
    prefix = _can_apt() if args.install else None
    if prefix is None:
        print(missing_message(todo), file=sys.stderr)
        return 1
    print(f"installing system packages: {' '.join(todo)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *(PACKAGES[n].apt for n in todo)], check=True, env=env)
    still = missing()
    if still:
        print(missing_message(still), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
