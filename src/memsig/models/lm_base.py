"""What every trained language model shares: :class:`LMBase`, the LightningModule behind
:class:`~memsig.models.char_lm.CharLM` and :class:`~memsig.models.hf.HFCausalLM`.

It keeps what training needs around a network: the next-symbol loss and its metrics, the
optimizer and schedule, the recurrent state carried from window to window (also across a resume,
in the checkpoint), skipping steps whose gradients overflow, and the divergence check. A subclass
builds its network and says how it runs a batch from a state (:meth:`LMBase.next_logits`) and how
its carried state is packed into one tensor for the checkpoint.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from memsig.vocab import Vocab

LOG2E = 1.0 / math.log(2.0)
MAX_SKIPPED_IN_A_ROW = 10  # overflowing steps in a row before training gives up
DIVERGED = 10.0  # a training cross-entropy above DIVERGED · log V has diverged (see divergence)
Scheduler = Literal["none", "plateau", "cosine"]
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


def detached(state: Any) -> Any:
    """``state`` (tensors in nested lists and tuples) with every tensor detached."""
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detached(s) for s in state)


class LMBase(L.LightningModule):
    """A language model trained on next-symbol prediction (see module docstring).

    A subclass calls ``super().__init__(vocab)``, then ``self.save_hyperparameters(ignore=["vocab"],
    logger=False)`` and :meth:`_options_saved` in its own ``__init__``, and implements
    :meth:`next_logits`, :meth:`_state_rows`, :meth:`_pack_carried` and :meth:`_unpack_carried`.
    Its options include ``lr``, ``weight_decay``, ``betas`` (AdamW) and ``scheduler``: ``none``,
    ``plateau`` (halve the rate when val/loss stops falling) or ``cosine`` (to 0 over the run's
    estimated steps).
    """

    def __init__(self, vocab: Vocab | dict[str, Any]) -> None:
        super().__init__()
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(dict(vocab))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._carried: dict[str, Any] = {}
        self.skipped_steps, self._skipped_in_a_row = 0, 0

    def _options_saved(self) -> None:
        """Make the saved options plain: the vocab as its dict, ``betas`` as a list."""
        self.hparams["vocab"] = self.vocab.to_dict()
        self.hparams["betas"] = list(self.hparams.betas)

    # ------------------------------------------------------------ what a subclass says
    def next_logits(self, batch: dict[str, Any], state: Any) -> tuple[Tensor, Any]:
        """``[B, T, V]`` logits of the next symbol at every position of ``batch`` run from
        ``state`` (``None``: the initial state), and the final state to carry."""
        raise NotImplementedError

    def _state_rows(self, state: Any) -> int:
        """The batch rows B of a carried state."""
        raise NotImplementedError

    def _pack_carried(self, state: Any) -> Tensor:
        """A carried state as one tensor (its layout is the subclass's), for the checkpoint."""
        raise NotImplementedError

    def _unpack_carried(self, packed: Tensor) -> Any:
        """The carried state from :meth:`_pack_carried`'s tensor."""
        raise NotImplementedError

    # ------------------------------------------------------------------ carried state
    def _start_state(self, batch: dict[str, Any], key: str) -> Any:
        """The carried state for a batch that continues its streams, else None (the initial state)."""
        prev = self._carried.get(key) if batch["carry"] else None
        if not prev:
            return None
        return prev if self._state_rows(prev) == batch["inputs"].shape[0] else None

    def _carry(self, key: str, state: Any) -> None:
        self._carried[key] = detached(state)

    # --------------------------------------------------------------------- training
    def _token_losses(self, batch: dict[str, Any], key: str) -> Tensor:
        """Cross-entropy in nats of every real position ``[N]``; carries the state under ``key``."""
        logits, final = self.next_logits(batch, self._start_state(batch, key))
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
        a rank holds only its own streams); the same value on every rank. Called outside a trainer (a
        step run by hand), this process's positions are all there are."""
        if self._trainer is None:
            return losses.mean()
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
        # on with it: [world_size, *packed], one row per rank.
        carried = self._carried.get("train")
        if carried:
            packed = self._pack_carried(carried)
            distributed = self._trainer is not None and self.trainer.world_size > 1
            checkpoint["carried_state"] = {"train": self.all_gather(packed) if distributed else packed.unsqueeze(0)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from memsig.models.checkpoint import check_compatible

        check_compatible(checkpoint, self)
        saved = checkpoint.get("carried_state", {}).get("train")
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if saved is not None and saved.shape[0] == world:  # else: the next window starts from zeros
            self._carried["train"] = self._unpack_carried(
                saved[rank].to(trainer.strategy.root_device if trainer is not None else self.device)
            )
