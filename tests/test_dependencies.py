"""What the install promises: the text path never loads torchaudio, and a torchaudio that cannot
load stops the speech path with the project's error (cause and fix), not a raw ``OSError``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memsig.data.speech.backend import TESTED_PAIR
from memsig.resolvers import PROJECT_ROOT

import system_deps


def run_python(code: str, *path: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (nothing imported yet), with ``path`` first on sys.path."""
    prefix = "".join(f"import sys; sys.path.insert(0, {str(p)!r})\n" for p in path)
    return subprocess.run(
        [sys.executable, "-c", prefix + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )


def test_text_path_never_imports_torchaudio() -> None:
    proc = run_python("""
        import sys
        import memsig, memsig.probe
        from memsig.data import TextDataModule
        from memsig.models.char_lm import CharLM
        import memsig.tasks.train, memsig.tasks.probe
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torchaudio")
        assert not loaded, loaded
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_torchaudio_that_cannot_load_gives_the_projects_error(tmp_path: Path) -> None:
    """A torchaudio whose library fails to load, as 2.11.x does against torch 2.11.0."""
    fake = tmp_path / "torchaudio"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")\n'
    )
    proc = run_python(
        """
        import torch
        from memsig.data.speech import LogMel
        from memsig.data.speech.backend import TorchaudioError
        from memsig.models.las.align import ctc_centres
        for use in (lambda: LogMel(),
                    lambda: ctc_centres(torch.zeros(1, 4, 3).log_softmax(-1), torch.tensor([4]),
                                        torch.tensor([[1, 2]]), torch.tensor([2]), 0, 1)):
            try:
                use()
            except TorchaudioError as err:
                print(err)
            else:
                raise SystemExit("no TorchaudioError")
    """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = proc.stdout.strip().splitlines()
    assert len(messages) == 2
    for message in messages:
        assert "undefined symbol: torch_exception_get_what_without_backtrace" in message  # the cause
        assert "requirements.lock" in message and "make setup" in message  # the fix
        assert f"torchaudio {TESTED_PAIR[1]} with torch {TESTED_PAIR[0]}" in message


def test_the_lock_pins_every_package_with_hashes() -> None:
    """requirements.lock: one exact version and at least one sha256 per package, the tested torch pair."""
    text = (PROJECT_ROOT / "requirements.lock").read_text()
    entries = [block for block in text.split("\n") if block and not block.startswith((" ", "#"))]
    assert len(entries) > 50
    for entry in entries:
        assert "==" in entry and entry.endswith("\\"), f"{entry!r} is not an exact, hashed pin"
    pins = dict(e.split(" ")[0].split("==") for e in entries)
    assert (pins["torch"], pins["torchaudio"]) == TESTED_PAIR  # the pair the speech path's error names
    assert text.count("--hash=sha256:") >= len(entries)


def test_missing_system_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = system_deps.missing(["espeak-ng", "chromium"])
    assert missing == ["espeak-ng", "chromium"]
    message = system_deps.missing_message(missing)
    assert "apt-get install -y espeak-ng chromium" in message and "make setup" in message
