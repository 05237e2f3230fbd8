"""The character LM's training: :class:`CharLM`, the LightningModule that trains a :class:`CharRNN`.

The network (embedding, recurrent stack, projection, every layer's states) is
:class:`~memsig.models.char_rnn.CharRNN`, built from the module's options; this module keeps what
training needs around it: the next-symbol loss and its metrics, the optimizer and schedule, the
recurrent state carried from window to window (also across a resume, in the checkpoint),
skipping steps whose gradients overflow, and the divergence check.

State interface (:class:`~memsig.states.StateSource`): ``states(batch)`` gives
``layer{l}.h`` (and ``layer{l}.c`` for LSTM), ``[B, T, hidden_size]``, l = 1 nearest the
input, aligned with ``batch["inputs"]``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from memsig.models.char_rnn import Cell, CharRNN, LayerRun, LayerState
from memsig.states import StateBatch
from memsig.vocab import Vocab

LOG2E = 1.0 / math.log(2.0)
MAX_SKIPPED_IN_A_ROW = 10  # overflowing steps in a row before training gives up
DIVERGED = 10.0  # a training cross-entropy above DIVERGED · log V has diverged (see divergence)
log = logging.getLogger(__name__)


def divergence(loss: Tensor, num_classes: int) -> str | None:
    """Why a finite training cross-entropy ``loss`` (nats per symbol) means training has diverged,
    as a parenthesis for the error message, or None. The bound is ``DIVERGED`` times ``log V``,
    the loss of the uniform guess over ``V = num_classes``: training starts near ``log V`` and
    falls from there, so a finite loss far above it comes only from runaway weights (e.g. too high
    a learning rate), never from a hard batch."""
    bound = DIVERGED * math.log(num_classes)
    if not bool(torch.isfinite(loss)) or loss <= bound:
        return None
    return f" (diverged: above {bound:.1f} = {DIVERGED:g} × log {num_classes}, the uniform guess's loss)"


class CharLM(L.LightningModule):
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
        scheduler: Literal["none", "plateau", "cosine"] = "plateau",
    ) -> None:
        super().__init__()
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(dict(vocab))
        self.save_hyperparameters(ignore=["vocab"], logger=False)
        self.hparams["vocab"] = self.vocab.to_dict()
        self.hparams["betas"] = list(betas)
        self.net = self.build_net()
        self.register_load_state_dict_pre_hook(_net_at_the_top_level)
        self.state_names = self.net.state_names
        self.state_dims = {name: hidden_size for name in self.state_names}
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._carried: dict[str, list[LayerState]] = {}
        self.skipped_steps, self._skipped_in_a_row = 0, 0

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

    def _start_state(self, batch: dict[str, Any], key: str) -> list[LayerState] | None:
        """The carried state for a batch that continues its streams, else None (zeros)."""
        prev = self._carried.get(key) if batch["carry"] else None
        if prev is None:
            return None
        first = prev[0][0] if isinstance(prev[0], tuple) else prev[0]
        return prev if first.shape[1] == batch["inputs"].shape[0] else None

    def _carry(self, key: str, state: list[LayerState]) -> None:
        self._carried[key] = [tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach() for s in state]

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

    # --------------------------------------------------------------------- training
    def _token_losses(self, batch: dict[str, Any], key: str) -> Tensor:
        """Cross-entropy in nats of every real position ``[N]``; carries the state under ``key``."""
        logits, final, _ = self(batch["inputs"], self._start_state(batch, key), **self.conditioning(batch))
        self._carry(key, final)
        losses = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
        return losses[batch["mask"].flatten()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self._token_losses(batch, "train")
        loss = losses.mean()
        overall = self._over_ranks(losses.detach())
        why = divergence(overall, len(self.vocab))
        if why or not torch.isfinite(overall):  # every rank sees the same value, so all of them stop
            raise FloatingPointError(
                f"training loss is {overall.item():.4g} at step {self.global_step}{why or ''}: "
                "lower model.lr, set trainer.gradient_clip_val, or resume from the last good checkpoint (ckpt_path=...)"
            )
        self.log("train/loss", overall, prog_bar=True)
        self.log("train/bpc", overall * LOG2E)
        self.log("train/skipped_steps", float(self.skipped_steps))
        return loss

    def _over_ranks(self, losses: Tensor) -> Tensor:
        """The mean of the token losses ``[N]`` of this step over every rank's positions (under DDP
        a rank holds only its own streams); the same value on every rank."""
        total = torch.stack([losses.sum(), losses.new_tensor(losses.numel())])
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        return total[0] / total[1]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip a step whose gradients overflowed although its loss is finite (back-propagation
        through a long segment can exceed float32), as a mixed-precision loss scaler does: the
        gradients are dropped, so the optimizer leaves every parameter and its moments alone.
        Counted in ``train/skipped_steps``; ``MAX_SKIPPED_IN_A_ROW`` such steps in a row raise."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads or bool(torch.stack([g.norm() for g in grads]).isfinite().all()):
            self._skipped_in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        log.warning(
            "step %d: non-finite gradients with a finite loss; step skipped (%d so far)",
            self.global_step,
            self.skipped_steps,
        )
        if self._skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise FloatingPointError(
                f"gradients overflowed at {self._skipped_in_a_row} steps in a row (step {self.global_step}): lower "
                "model.lr or set trainer.gradient_clip_val; a factorized LM: lower model.lambda_clip "
                "or set model.lambda_refit=true when fine-tuning on another corpus"
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_loss.update(self._token_losses(batch, "val"))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.test_loss.update(self._token_losses(batch, "test"))

    def _log_eval(self, stage: str, metric: MeanMetric) -> None:
        loss = metric.compute()  # over every rank's positions: torchmetrics reduces across ranks here
        metric.reset()
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/bpc": loss * LOG2E, f"{stage}/ppl": loss.exp()},
            prog_bar=True,
            sync_dist=False,  # already global (Lightning's advice to sync would average equal values)
        )

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_loss)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        if hp.scheduler == "none":
            return {"optimizer": opt}
        if hp.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "strict": False}}
        if hp.scheduler == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        raise ValueError(f"model.scheduler must be none, plateau or cosine; got {hp.scheduler!r}")

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["memsig"] = {
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "vocab": self.vocab.to_dict(),
        }
        # The training state carried into the next window, so a run resumed mid-epoch goes
        # on with it: [world_size, n_layers * (2 if lstm else 1), 1, B, H], one row per rank.
        carried = self._carried.get("train")
        if carried is not None:
            flat = torch.stack([t for s in carried for t in (s if isinstance(s, tuple) else (s,))])
            distributed = self._trainer is not None and self.trainer.world_size > 1
            checkpoint["carried_state"] = {"train": self.all_gather(flat) if distributed else flat.unsqueeze(0)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from memsig.models.checkpoint import check_compatible

        check_compatible(checkpoint, self)
        saved = checkpoint.get("carried_state", {}).get("train")
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if saved is not None and saved.shape[0] == world:  # else: the next window starts from zeros
            flat = saved[rank].to(trainer.strategy.root_device if trainer is not None else self.device)
            per_layer = 2 if self.hparams.cell == "lstm" else 1
            self._carried["train"] = [
                (flat[i], flat[i + 1]) if per_layer == 2 else flat[i] for i in range(0, len(flat), per_layer)
            ]


def _net_at_the_top_level(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load a checkpoint written before the network was its own module (``embedding.weight``,
    ``layers.0.weight_hh_l0``, …): its network entries, at the top level, move under ``net.``."""
    net_keys = module.net.state_dict().keys()
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix) :] in net_keys]:
        state_dict[f"{prefix}net.{key[len(prefix) :]}"] = state_dict.pop(key)
