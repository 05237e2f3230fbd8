"""The network of a :class:`~memsig.models.hf.HFCausalLM`: :class:`HFNet`, a Hugging Face causal LM
built from its config that also returns every layer's states at every position.

Shapes: B batch rows, T steps, V symbols. A network's state is a list (one entry per layer) of
tuples of ``[B, …]`` tensors; a network without recurrent state has the empty list.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PretrainedConfig

LayerState = tuple[Tensor, ...]


class HFNet(nn.Module):
    """A Hugging Face causal LM (``self.model``, built from ``config`` with fresh weights) that
    returns its states by name (``state_names``, ``state_dims``).

    A subclass sets ``state_names`` and ``state_dims`` and implements :attr:`blocks` and
    :meth:`run_embedded` (and, with a recurrent state, :meth:`zero_state`; without, it sets
    ``recurrent = False``)."""

    state_names: list[str]
    state_dims: dict[str, int]
    recurrent = True  # the state is carried from window to window (see :meth:`zero_state`)

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        self.model = AutoModelForCausalLM.from_config(config)

    @property
    def blocks(self) -> nn.ModuleList:
        """The model's blocks, the first nearest the input (a property: the model holds them)."""
        raise NotImplementedError

    def zero_state(self, batch_size: int) -> list[LayerState]:
        """Per layer, the initial state of ``batch_size`` rows (none without recurrent state)."""
        return []

    def history(self, history: Tensor) -> Tensor:
        """``[B, T]`` the symbols each state has seen, given the stream's ``history`` ``[B, T]``
        (a recurrent network carries its state, so it sees all of it)."""
        return history

    def embed(self, inputs: Tensor) -> Tensor:
        """``[B, T, E]`` the input embeddings of symbol ids ``[B, T]``: rows of the model's embedding
        table, before any scaling or position embedding (those belong to :meth:`run_embedded`)."""
        return self.model.get_input_embeddings()(inputs)

    def forward(
        self, inputs: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        """Run the network on ``inputs`` ``[B, T]`` from ``state`` (``None``: the initial state).

        Returns the logits ``[B, T, V]`` of the next symbol, the final state, and (with
        ``return_states``, else empty) the states ``[B, T, D]`` by name.
        """
        return self.run_embedded(self.embed(inputs), state, return_states)

    def run_embedded(
        self, emb: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        """:meth:`forward` from the input embeddings ``emb`` ``[B, T, E]`` (:meth:`embed`)."""
        raise NotImplementedError
