"""The LightningModule of a Hugging Face causal LM: :class:`HFCausalLM`.

It builds its network (:func:`~memsig.models.hf.networks.build_network`) from ``config``, the
Hugging Face config's options with its ``model_type`` (``conf/model/transformer.yaml``,
``mamba.yaml``, …), with fresh weights and the project's symbol set as its vocabulary, and trains it
as :class:`~memsig.models.lm_base.LMBase` trains every LM: same loss, metrics, optimizer, and the
recurrent state carried from window to window where the network has one.

State interface (:class:`~memsig.states.StateSource`): ``states(batch)`` gives the network's
states by name (``layer{l}.residual``, and the family's recurrent state, e.g. ``layer{l}.ssm``),
``[B, T, D]``, aligned with ``batch["inputs"]``; ``history`` is what the network has seen (a
Transformer's window). The states are differentiable in the input embeddings
(:class:`~memsig.states.GradientSource`: ``embed``, ``embedded_states``), which state gradients read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from memsig.models.hf.base import LayerState
from memsig.models.hf.networks import build_network
from memsig.models.lm_base import LMBase, Scheduler
from memsig.states import StateBatch
from memsig.vocab import Vocab


class HFCausalLM(LMBase):
    """A Hugging Face causal LM built from a config, trained and probed (see module docstring).

    Args:
        vocab: the symbol set (a :class:`Vocab` or its ``to_dict()``); it sets the config's ``vocab_size``.
        config: the Hugging Face config's options, with its ``model_type`` (a key of
            :data:`~memsig.models.hf.networks.NETWORKS`).
        lr, weight_decay, betas, scheduler: as :class:`~memsig.models.lm_base.LMBase`.
    """

    ARCH_KEYS = ("config",)

    def __init__(
        self,
        vocab: Vocab | dict[str, Any],
        config: Mapping[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: Scheduler = "plateau",
    ) -> None:
        super().__init__(vocab)
        options = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
        if "model_type" not in options:
            raise ValueError("model.config has no model_type; name the Hugging Face family, e.g. model_type: mamba")
        if "vocab_size" in options:
            raise ValueError(
                f"model.config.vocab_size={options['vocab_size']} is set; leave it out: the symbol set "
                f"(vocab, {len(self.vocab)} symbols) sets it"
            )
        self.save_hyperparameters(ignore=["vocab"], logger=False)
        self.hparams["config"] = options
        self._options_saved()
        family = {k: v for k, v in options.items() if k != "model_type"}
        self.net = build_network(options["model_type"], vocab_size=len(self.vocab), **family)
        self.state_names, self.state_dims = self.net.state_names, self.net.state_dims

    def forward(
        self, inputs: Tensor, state: list[LayerState] | None = None, return_states: bool = False
    ) -> tuple[Tensor, list[LayerState], dict[str, Tensor]]:
        """The network's :meth:`~memsig.models.hf.base.HFNet.forward`."""
        return self.net(inputs, state, return_states)

    def next_logits(self, batch: dict[str, Any], state: list[LayerState] | None) -> tuple[Tensor, list[LayerState]]:
        logits, final, _ = self(batch["inputs"], state)
        return logits, final

    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        """Every layer's states of a batch, frozen (eval mode, no grad); carries state like training."""
        was_training = self.training
        self.eval()
        try:
            logits, final, out = self(batch["inputs"], self._start_state(batch, "states"), return_states=True)
            self._carry("states", final)
        finally:
            self.train(was_training)
        history = self.net.history(batch["history"])
        return StateBatch(out, batch["inputs"], batch["mask"], history, next_logits=logits)

    # ------------------------------------------------------------- gradient source
    def embed(self, inputs: Tensor) -> Tensor:
        """``[B, T, E]`` the input embeddings of symbol ids ``[B, T]`` (the embedding table's rows)."""
        return self.net.embed(inputs)

    def embedded_states(self, emb: Tensor, context: Tensor | None = None, repeat: int = 1) -> dict[str, Tensor]:
        """States ``[R·B, T, D]`` by name of the embedded inputs ``emb`` ``[R·B, T, E]``, differentiable
        in ``emb``; row ``r·B + b`` follows the symbols ``context[b]`` (``[B, Tc]``, run once without
        gradient; R = ``repeat``): a recurrent network starts from the state they leave, the
        Transformer reads them and the window as one window. Eval mode is the caller's business."""
        state, prefix = None, emb[:, :0]
        if context is not None and context.shape[1] > 0:
            with torch.no_grad():
                if self.net.recurrent:
                    _, state, _ = self.net(context)
                    state = [tuple(t.repeat(repeat, *[1] * (t.dim() - 1)) for t in layer) for layer in state]
                else:
                    prefix = self.net.embed(context).repeat(repeat, 1, 1)
        _, _, states = self.net.run_embedded(torch.cat([prefix, emb], dim=1), state, return_states=True)
        return {name: s[:, prefix.shape[1] :] for name, s in states.items()}

    def kernel_params(self, name: str) -> int:
        """Parameters of the block behind a state ``layer{l}.…`` (the probe's ``width: auto``)."""
        block = self.net.blocks[int(name.split(".")[0].removeprefix("layer")) - 1]
        return sum(p.numel() for p in block.parameters())

    # ------------------------------------------------------------------ carried state
    def _state_rows(self, state: list[LayerState]) -> int:
        return state[0][0].shape[0]

    def _pack_carried(self, state: list[LayerState]) -> Tensor:
        """``[B, S]``: every tensor of every layer's state, flattened per row and concatenated."""
        return torch.cat([t.flatten(1) for layer in state for t in layer], dim=1)

    def _unpack_carried(self, packed: Tensor) -> list[LayerState]:
        shapes = self.net.zero_state(packed.shape[0])
        pieces = iter(packed.split([t[0].numel() for layer in shapes for t in layer], dim=1))
        return [tuple(next(pieces).view_as(t) for t in layer) for layer in shapes]
