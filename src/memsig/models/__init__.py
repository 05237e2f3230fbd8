"""Models that expose their states through :class:`memsig.states.StateSource`."""

from memsig.models.char_lm import CharLM
from memsig.models.checkpoint import CheckpointError, load_model, load_weights
from memsig.models.factorized import FactorizedCharLM, FixedLambda
from memsig.models.ngram import NGramLM

__all__ = ["CharLM", "CheckpointError", "FactorizedCharLM", "FixedLambda", "NGramLM", "load_model", "load_weights"]
