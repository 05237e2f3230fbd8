"""memsig: memory signatures of recurrent networks (what history a state keeps).

import memsig
signature = memsig.probe("outputs/train/runs/<run>/checkpoints/last.ckpt", "my_text.txt")
"""

import importlib
from typing import Any

from memsig.resolvers import register_resolvers
from memsig.states import StateBatch, StateSource
from memsig.vocab import Vocab

register_resolvers()

__all__ = ["Signature", "StateBatch", "StateSource", "Vocab", "probe"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``memsig.probe`` (a callable package: ``memsig.probe(model, data, ...)``) and
    ``memsig.Signature``, imported when first used: ``import memsig`` loads no Lightning."""
    if name == "probe":
        return importlib.import_module("memsig.probe")
    if name == "Signature":
        return importlib.import_module("memsig.probe.signature").Signature
    raise AttributeError(f"module 'memsig' has no attribute {name!r}")
