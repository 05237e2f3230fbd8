"""All Δ×L memory decoders of a frozen model, trained together in one pass.

:class:`MultiHeadProbe` is a LightningModule over the *LM's own batches*: each step asks
the frozen :class:`~memsig.states.StateSource` for its states (eval mode, ``no_grad``),
builds the recall target of every lag (:mod:`memsig.probe.targets`), samples a budget of
positions, and trains every decoder on them at once — for each probed state the first
layers of all lags are one GEMM (:class:`~memsig.probe.heads.BatchedMLPHeads`). States
stream batch by batch; nothing grows with the corpus.

Selection follows the reference: decoders train on the train split, each head keeps its
best weights by its own dev loss (buffers, so a resumed probe continues correctly), and
the test split is scored with those best weights into confusion matrices, from which
:meth:`MultiHeadProbe.signature` builds the :class:`~memsig.probe.signature.Signature`.

Controls (``controls``) run as extra heads in the same pass: ``random`` probes a randomly
initialised copy of the model, ``shuffled`` probes the real states shuffled across the
positions of each batch (so they carry no information about their own targets).
The paper's dropout sweep runs as extra heads too: one set per keep probability in
``keep_probs`` (applied to the state and to hidden layers); the signature reports the
keep probability with the lowest mean dev loss over the model's real heads.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memsig.probe.controls import check_controls, control_spec, random_copy
from memsig.probe.heads import BatchedMLPHeads
from memsig.probe.signature import Signature
from memsig.probe.targets import LeftContext, bigram_labels, lag_targets, resolve_probe
from memsig.states import StateBatch, StateSource

Control = Literal["random", "shuffled"]


class MultiHeadProbe(L.LightningModule):
    """Memory probe: decoder (δ, s) reads state s at t and predicts the label at t − δ.

    Args:
        source: the frozen model (never trained, never saved with the probe).
        states: probed states; ``"layer1.c+layer1.h"`` concatenates. Default: the
            source's ``c`` states if it has any (the paper probes LSTM cell states),
            else all.
        lags: the lags δ (default 1…20; 0 and negative lags allowed, see targets).
        width: hidden units per decoder, or ``"auto"``: the paper's rule, at least as
            many decoder parameters as the kernel + input projection behind the state
            (``source.kernel_params``), ``ceil(P / (D + C))`` for one hidden layer.
        max_width: cap on ``auto`` widths (CPU budget); the cap is reported in meta.
        depth: hidden layers per decoder (0 = linear decoder).
        keep_probs: dropout keep probabilities to sweep (one head set each).
        lr, weight_decay: Adam settings for the heads.
        positions_per_batch: positions sampled from each training batch (``None``: all).
        common_positions: score dev/test only where every lag has a target.
        controls: ``random`` and/or ``shuffled`` (see module docstring).
        target: ``symbol`` (the input symbol) or ``bigram`` (the bigram ending there).
        seed: seed of the position sampling, shuffling and the random control.
    """

    def __init__(
        self,
        source: StateSource,
        states: list[str] | None = None,
        lags: list[int] | None = None,
        width: int | Literal["auto"] = "auto",
        max_width: int | None = 1024,
        depth: int = 1,
        keep_probs: list[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        positions_per_batch: int | None = 1024,
        common_positions: bool = False,
        controls: list[Control] | None = None,
        target: Literal["symbol", "bigram"] = "symbol",
        seed: int = 0,
    ) -> None:
        super().__init__()
        states, lags = resolve_probe(source, states, lags)
        controls = check_controls(controls or [])
        if target not in ("symbol", "bigram"):
            raise ValueError(f"probe.target must be symbol or bigram; got {target!r}")
        self.save_hyperparameters(ignore=["source"])
        self.hparams.update(states=states, lags=lags, keep_probs=list(keep_probs or [1.0]), controls=controls)
        self._source = [source]  # a list: not a submodule, so never in the optimizer or checkpoint
        self._random = [random_copy(source, seed)] if "random" in controls else []
        v = len(source.vocab)
        self.num_classes = v * v if target == "bigram" else v
        self.probed = [*states, *(control_spec(c, s) for c in controls for s in states)]
        self.widths: dict[str, int] = {}
        self.groups: list[tuple[str, float]] = [(s, p) for p in self.hparams.keep_probs for s in self.probed]
        heads = []
        for s, p in self.groups:
            base = s.split(":")[-1]
            d = sum(source.state_dims[x] for x in base.split("+"))
            w = self.widths.setdefault(base, self._width(source, base, d))
            heads.append(BatchedMLPHeads(len(lags), d, w, depth, self.num_classes, 1 - p, 1 - p))
        self.heads = nn.ModuleList(heads)
        self.context = LeftContext(max(0, max(lags)) + (1 if target == "bigram" else 0))
        self._gen = torch.Generator().manual_seed(seed)
        self._eval: dict[str, Tensor] = {}

    def _width(self, source: StateSource, state: str, d: int) -> int:
        hp = self.hparams
        if hp.width != "auto":
            return int(hp.width)
        if hp.depth == 0:
            return 0
        kernel = getattr(source, "kernel_params", None)
        p = sum(kernel(x) for x in state.split("+")) if kernel else d * d
        w = math.ceil(p / (d + self.num_classes))
        return min(w, hp.max_width) if hp.max_width else w

    @property
    def source(self) -> StateSource:
        return self._source[0]

    # ------------------------------------------------------------------ features
    def _labels(self, sb: StateBatch, key: str, carry: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Labels with left context ``[B, ctx + T]`` and the history and mask that go with them."""
        ext = self.context.extend(key, sb.symbols, carry)
        if self.hparams.target == "symbol":
            return ext, sb.history, sb.mask
        # the bigram ending at t - δ needs one more symbol of history than the symbol itself
        return bigram_labels(ext, len(self.source.vocab)), sb.history - 1, sb.mask & (sb.history >= 1)

    def _batch_features(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, StateBatch]:
        """Features ``[N, D]`` per probed state, targets and validity ``[N, K]`` at the chosen positions."""
        for src in (self.source, *self._random):
            if isinstance(src, nn.Module):
                src.eval()
        with torch.no_grad():
            sb = self.source.states(batch)
            rnd = self._random[0].states(batch) if self._random else None
            ext, history, mask = self._labels(sb, stage, bool(batch["carry"]))
            lags = self.hparams.lags
            common = stage != "train" and self.hparams.common_positions
            targets, valid = lag_targets(ext, history, mask, lags, common=common)
            k = len(lags)
            any_valid = valid.reshape(-1, k).any(-1)
            idx = any_valid.nonzero().squeeze(1)
            budget = self.hparams.positions_per_batch
            if stage == "train" and budget and len(idx) > budget:
                idx = idx[torch.randperm(len(idx), generator=self._gen)[:budget].to(idx.device)]
            feats: dict[str, Tensor] = {}
            for s in self.probed:
                kind, _, base = s.rpartition(":")
                states = (rnd if kind == "random" else sb).states
                x = torch.cat([states[p] for p in base.split("+")], -1)
                x = x.reshape(-1, x.shape[-1])[idx]
                if kind == "shuffled":
                    x = x[torch.randperm(len(idx), generator=self._gen).to(x.device)]
                feats[s] = x
            return feats, targets.reshape(-1, k)[idx], valid.reshape(-1, k)[idx], sb

    def _head_losses(self, heads: BatchedMLPHeads, x: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head summed CE ``[K]``, counts ``[K]`` and logits ``[K, C, N]``."""
        logits = heads(x)
        ce = F.cross_entropy(logits, y.T, reduction="none")  # [K, N]
        vf = v.T.to(ce.dtype)
        return (ce * vf).sum(1), vf.sum(1), logits

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        self._move_sources()

    def on_test_start(self) -> None:
        self._move_sources()
        for h in self.heads:
            h.load_best()

    def _move_sources(self) -> None:
        for src in (self.source, *self._random):
            if isinstance(src, nn.Module):
                src.to(self.device)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        feats, y, v, _ = self._batch_features(batch, "train")
        total = 0.0
        for (s, _), heads in zip(self.groups, self.heads):
            ce, n, _ = self._head_losses(heads, feats[s], y, v)
            total = total + (ce / n.clamp(min=1)).sum()
        loss = total / len(self.groups) / len(self.hparams.lags)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"probe loss is {loss.item()} at step {self.global_step}: lower probe.lr")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        k = len(self.hparams.lags)
        self._eval = {
            "ce": torch.zeros(len(self.groups), k, device=self.device),
            "n": torch.zeros(len(self.groups), k, device=self.device),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        feats, y, v, _ = self._batch_features(batch, "val")
        for g, ((s, _), heads) in enumerate(zip(self.groups, self.heads)):
            ce, n, _ = self._head_losses(heads, feats[s], y, v)
            self._eval["ce"][g] += ce
            self._eval["n"][g] += n

    def on_validation_epoch_end(self) -> None:
        dev = self._eval["ce"] / self._eval["n"].clamp(min=1)
        if self.trainer.sanity_checking:
            return
        improved = torch.stack([heads.keep_best(dev[g]) for g, heads in enumerate(self.heads)])
        self.log_dict(
            {
                "val/loss": dev.mean(),
                "val/best_loss": self.best_dev_loss().mean(),
                "val/improved_heads": improved.float().mean(),
            },
            prog_bar=True,
        )

    def best_dev_loss(self) -> Tensor:
        """``[groups, K]`` each head's best dev loss so far (inf before the first validation)."""
        return torch.stack([h.best_loss for h in self.heads])

    def on_test_epoch_start(self) -> None:
        k, c = len(self.hparams.lags), self.num_classes
        self._eval = {
            "confusion": torch.zeros(len(self.groups), k, c * c, dtype=torch.long, device=self.device),
            "ce": torch.zeros(len(self.groups), k, dtype=torch.float64, device=self.device),
            "forward": torch.zeros(len(self.source.vocab) ** 2, dtype=torch.long, device=self.device),
        }

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        feats, y, v, sb = self._batch_features(batch, "test")
        c = self.num_classes
        for g, ((s, _), heads) in enumerate(zip(self.groups, self.heads)):
            ce, _, logits = self._head_losses(heads, feats[s], y, v)
            self._eval["ce"][g] += ce.double()
            pred = logits.argmax(1)  # [K, N]
            for j in range(len(self.hparams.lags)):
                keep = v[:, j]
                self._eval["confusion"][g, j] += torch.bincount(y[keep, j] * c + pred[j, keep], minlength=c * c)
        if sb.next_logits is not None:
            v_ = len(self.source.vocab)
            ok = sb.mask[:, 1:] & sb.mask[:, :-1]
            pred = sb.next_logits[:, :-1].argmax(-1)[ok]
            self._eval["forward"] += torch.bincount(sb.symbols[:, 1:][ok] * v_ + pred, minlength=v_ * v_)

    # --------------------------------------------------------------- the result
    def chosen_keep_prob(self) -> float:
        """The swept keep probability with the lowest mean best-dev-loss over the real states' heads."""
        best = self.best_dev_loss()
        real = set(self.hparams.states)
        scores = {
            p: float(best[[i for i, (s, q) in enumerate(self.groups) if q == p and s in real]].mean())
            for p in self.hparams.keep_probs
        }
        return min(scores, key=lambda p: (math.isnan(scores[p]), scores[p]))

    def signature(self, prior: np.ndarray, symbols: list[str], meta: dict[str, Any] | None = None) -> Signature:
        """The signature of the last test run (call after ``trainer.test``)."""
        if "confusion" not in self._eval:
            raise RuntimeError("run trainer.test(probe, ...) before asking for the signature")
        p = self.chosen_keep_prob()
        idx = [i for i, (_, q) in enumerate(self.groups) if q == p]
        c, k = self.num_classes, len(self.hparams.lags)
        confusion = self._eval["confusion"][idx].view(len(idx), k, c, c).cpu().numpy()
        counts = confusion.sum((-1, -2))
        ce_bits = self._eval["ce"][idx].cpu().numpy() / np.maximum(counts, 1) / math.log(2)
        v = len(self.source.vocab)
        fwd = self._eval["forward"].view(v, v).cpu().numpy() if self.hparams.target == "symbol" else None
        info = {
            "probe": {**dict(self.hparams), "widths": self.widths, "keep_prob": p},
            "dev_loss": {
                f"{s}@{q}": [round(float(x), 5) for x in row] for (s, q), row in zip(self.groups, self.best_dev_loss())
            },
            **(meta or {}),
        }
        return Signature(
            [self.groups[i][0] for i in idx],
            list(self.hparams.lags),
            list(symbols),
            confusion,
            ce_bits,
            np.asarray(prior, dtype=np.float64),
            fwd if fwd is not None and fwd.sum() else None,
            info,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # fused: one kernel per step for all heads' elementwise updates (a fifth of a step otherwise)
        return torch.optim.Adam(
            self.heads.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True
        )
