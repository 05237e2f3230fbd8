"""Hugging Face causal LMs, built from a config (never downloaded weights), trained and probed as
memsig's own: :class:`HFCausalLM` (the LightningModule) and a network per model family."""

from memsig.models.hf.base import HFNet
from memsig.models.hf.lm import HFCausalLM
from memsig.models.hf.networks import NETWORKS, build_network

__all__ = ["NETWORKS", "HFCausalLM", "HFNet", "build_network"]
