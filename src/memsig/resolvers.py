"""Where corpora live, and the OmegaConf resolvers configs use (``${memsig.*:}``).

The data root is ``$MEMSIG_DATA_DIR`` when set; otherwise ``../shared/data`` beside the
checkout when that folder exists (tests, CI and the default run read the shared corpora
there); otherwise ``~/.cache/memsig``. Configs reach it as ``${memsig.data_dir:}``.

W&B runs offline unless the user is logged in (``WANDB_API_KEY`` set, or an
``api.wandb.ai`` entry in ``~/.netrc``) or sets ``WANDB_MODE`` themselves:
``${memsig.wandb_offline:}``.

Resolvers are registered when ``memsig`` is imported, so Slurm workers that unpickle a
config have them too.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The root folder of the corpora (see module docstring)."""
    env = os.environ.get("MEMSIG_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path("~/.cache/memsig").expanduser()


def wandb_offline() -> bool:
    """True unless W&B credentials are present or ``WANDB_MODE`` asks for online."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path("~/.netrc").expanduser()
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


RESOLVERS = {
    "memsig.data_dir": lambda: str(data_dir()),
    "memsig.project_root": lambda: str(PROJECT_ROOT),
    "memsig.wandb_offline": wandb_offline,
    "memsig.basename": lambda p: Path(str(p)).name,
}


def register_resolvers() -> None:
    """Register the ``memsig.*`` resolvers (idempotent)."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
