"""The character LM's training: :class:`CharLM`, the LightningModule that trains a :class:`CharRNN`.

The network (embedding, recurrent stack, projection, every layer's states) is
:class:`~memsig.models.char_rnn.CharRNN`, built from the module's options; what training needs
around it (loss, metrics, optimizer, the state carried from window to window, skipped steps, the
divergence check) is :class:`~memsig.models.lm_base.LMBase`'s.

State interface (:class:`~memsig.states.StateSource`): ``states(batch)`` gives
``layer{l}.h`` (and ``layer{l}.c`` for LSTM), ``[B, T, hidden_size]``, l = 1 nearest the
input, aligned with ``batch["inputs"]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from memsig.models.char_rnn import Cell, CharRNN, LayerRun, LayerState
from memsig.models.lm_base import LMBase, Scheduler
from memsig.states import StateBatch
from memsig.vocab import Vocab


class CharLM(LMBase):
    """Character-level LSTM/GRU language model (a LightningModule and a StateSource).

    Builds its network (:meth:`build_net`, ``self.net``) from the options and trains it.

    Args:
        vocab: the symbol set (a :class:`Vocab` or its ``to_dict()``).
        cell: ``lstm`` or ``gru``.
        num_layers: stacked recurrent layers.
        hidden_size: units per layer (the paper's kernel size).
        embedding_size: size of W_C's output.
        dropout_embedding, dropout, dropout_recurrent: as :class:`~memsig.models.char_rnn.CharRNN`.
        lr, weight_decay, betas: AdamW settings.
        scheduler: ``none``, ``plateau`` (halve the rate when val/loss stops falling) or
            ``cosine`` (to 0 over the run's estimated steps).
    """

    ARCH_KEYS = ("cell", "num_layers", "hidden_size", "embedding_size")

    def __init__(
        self,
        vocab: Vocab | dict[str, Any],
        cell: Cell = "lstm",
        num_layers: int = 1,
        hidden_size: int = 320,
        embedding_size: int = 64,
        dropout_embedding: float = 0.0,
        dropout: float = 0.0,
        dropout_recurrent: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: Scheduler = "plateau",
    ) -> None:
        super().__init__(vocab)
        self.save_hyperparameters(ignore=["vocab"], logger=False)
        self._options_saved()
        self.net = self.build_net()
        self.register_load_state_dict_pre_hook(_net_at_the_top_level)
        self.state_names = self.net.state_names
        self.state_dims = {name: hidden_size for name in self.state_names}

    def build_net(self, network: type[CharRNN] = CharRNN, **extra: Any) -> CharRNN:
        """The network this module trains, a ``network``, from its options (``self.hparams``) and
        the ``extra`` arguments that network takes."""
        hp = self.hparams
        return network(
            len(self.vocab),
            hp.cell,
            hp.num_layers,
            hp.hidden_size,
            hp.embedding_size,
            hp.dropout_embedding,
            hp.dropout,
            hp.dropout_recurrent,
            **extra,
        )

    def forward(
        self, inputs: Tensor, state: list[LayerState] | None = None, return_layers: bool = False, **cond: Any
    ) -> tuple[Tensor, list[LayerState], list[LayerRun]]:
        """The network's :meth:`~memsig.models.char_rnn.CharRNN.forward`."""
        return self.net(inputs, state, return_layers, **cond)

    def conditioning(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Extra inputs of every layer taken from a batch (none here; see the factorized LM)."""
        return {}

    def next_logits(self, batch: dict[str, Any], state: list[LayerState] | None) -> tuple[Tensor, list[LayerState]]:
        logits, final, _ = self(batch["inputs"], state, **self.conditioning(batch))
        return logits, final

    def _state_rows(self, state: list[LayerState]) -> int:
        first = state[0][0] if isinstance(state[0], tuple) else state[0]
        return first.shape[1]

    def _pack_carried(self, state: list[LayerState]) -> Tensor:
        """``[n_layers * (2 if lstm else 1), 1, B, H]``: each layer's h (and c), stacked."""
        return torch.stack([t for s in state for t in (s if isinstance(s, tuple) else (s,))])

    def _unpack_carried(self, packed: Tensor) -> list[LayerState]:
        per_layer = 2 if self.hparams.cell == "lstm" else 1
        return [(packed[i], packed[i + 1]) if per_layer == 2 else packed[i] for i in range(0, len(packed), per_layer)]

    # ----------------------------------------------------------------- state source
    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        """Per-layer states of a batch, frozen (eval mode, no grad); carries state like training.

        Returns a :class:`StateBatch` with ``layer{l}.h`` (and ``layer{l}.c``), ``[B, T, H]``.
        """
        was_training = self.training
        self.eval()
        try:
            cond = self.conditioning(batch)
            logits, final, layers = self(
                batch["inputs"], self._start_state(batch, "states"), return_layers=True, **cond
            )
            self._carry("states", final)
            out = self.net.named_states(layers, **cond)
        finally:
            self.train(was_training)
        return StateBatch(out, batch["inputs"], batch["mask"], batch["history"], next_logits=logits)

    # ------------------------------------------------------------- gradient source
    def embed(self, inputs: Tensor) -> Tensor:
        """``[B, T, E]`` the input embeddings of symbol ids ``[B, T]`` (W_C, no dropout)."""
        return self.net.embedding(inputs)

    def embedded_states(self, emb: Tensor, context: Tensor | None = None, repeat: int = 1) -> dict[str, Tensor]:
        """States ``[R·B, T, H]`` by name of the embedded inputs ``emb`` ``[R·B, T, E]``, differentiable
        in ``emb``; row ``r·B + b`` follows the symbols ``context[b]`` (``[B, Tc]``, run once without
        gradient; R = ``repeat``). Eval mode (no dropout) is the caller's business, as for :meth:`states`."""
        state = None
        if context is not None and context.shape[1] > 0:
            with torch.no_grad():
                _, state, _ = self(context)
            state = [
                tuple(t.repeat(1, repeat, 1) for t in s) if isinstance(s, tuple) else s.repeat(1, repeat, 1)
                for s in state
            ]
        _, _, layers = self.net.run_embedded(emb, state, return_layers=True)
        return self.net.named_states(layers)

    def kernel_params(self, name: str) -> int:
        """Parameters of the kernel behind a state (see :meth:`~memsig.models.char_rnn.CharRNN.kernel_params`)."""
        return self.net.kernel_params(int(name.split(".")[0].removeprefix("layer")))


def _net_at_the_top_level(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load a checkpoint written before the network was its own module (``embedding.weight``,
    ``layers.0.weight_hh_l0``, …): its network entries, at the top level, move under ``net.``."""
    net_keys = module.net.state_dict().keys()
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix) :] in net_keys]:
        state_dict[f"{prefix}net.{key[len(prefix) :]}"] = state_dict.pop(key)
