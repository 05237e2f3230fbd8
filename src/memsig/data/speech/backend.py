"""torchaudio, loaded on first use by the speech path only, with a clear error when it cannot load.

torchaudio ships a compiled library built against one torch release; against another it fails
to load with a raw ``OSError`` (an undefined symbol). The text path never imports it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

#: (torch, torchaudio) as pinned in requirements.lock: the pair that was tested to load together.
TESTED_PAIR = ("2.14.1", "2.11.1")


class TorchaudioError(ImportError):
    """torchaudio is missing or cannot load against the installed torch."""


def torchaudio(submodule: str) -> ModuleType:
    """``torchaudio.<submodule>`` (e.g. ``"functional"``, ``"transforms"``), imported now.

    Raises:
        TorchaudioError: torchaudio is not installed or does not load against this torch; the
            message names the cause and the fix.
    """
    try:
        return importlib.import_module(f"torchaudio.{submodule}")
    except (ImportError, OSError) as err:
        raise TorchaudioError(
            f"the speech path needs torchaudio, which did not load against torch {torch.__version__}: "
            f"{type(err).__name__}: {err}. torchaudio's compiled library works only with the torch it was "
            f"built for (torchaudio {TESTED_PAIR[1]} with torch {TESTED_PAIR[0]} is the tested pair in "
            "requirements.lock). "
            "Fix: `make setup`, or `pip install --require-hashes --no-deps -r requirements.lock` in this "
            "environment. Text models and probes do not need torchaudio."
        ) from err
