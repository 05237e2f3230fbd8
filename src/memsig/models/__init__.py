"""Models that expose their states through :class:`memsig.states.StateSource`."""

from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import CheckpointError, load_model

__all__ = ["CharLM", "CheckpointError", "load_model"]
