"""All Δ×L memory decoders of a frozen model, trained together until each has converged.

:class:`MultiHeadProbe` is a LightningModule. By default (``cache=True``) the frozen
:class:`~memsig.states.StateSource` runs over each split once and its states are cached
(:mod:`memsig.probe.cache`); decoders then train on random minibatches of cached positions, so
the model's forward pass is paid once, not every epoch, and an optimizer step is decoupled from
the model's batch. With ``cache=False`` they train on ``positions_per_batch`` positions sampled
from each of the model's batches, streamed (for states that do not fit the disk).

For each probed state the first layers of all lags are one GEMM
(:class:`~memsig.probe.heads.BatchedMLPHeads`). Head sets: one per probed state (controls
included: ``random:`` states of a randomly initialised copy of the model, ``shuffled:`` real
states moved across positions; :mod:`memsig.probe.controls`), per dropout keep probability in
``keep_probs`` (the paper's sweep; the signature reports the keep probability with the lowest
mean dev loss over the real heads) and per probe seed in ``seeds`` (different initialisations:
the spread of a signature over probe training).

**Stopping.** Every ``eval_every`` training steps (mid-epoch) each head's dev loss is measured
on ``dev_positions`` fixed dev positions. A head keeps its best weights; once it has not bettered
its best dev loss by ``min_rel_improvement`` (relative; at least ``min_improvement`` nats) for
``patience`` checks in a row it has
converged and stops training (it costs no more FLOPs). Training ends when every head has
converged, or at ``max_steps`` (or the trainer's ``max_time``): heads still improving then are
marked unconverged in the signature (``meta["convergence"]``). Stopping state lives in buffers
and the training order in the loader's state, so a probe resumed from its checkpoint continues
exactly.

**Memory beyond inference** (``baseline_order``, symbol targets, cached states). The
backward-context baseline (:mod:`memsig.probe.backward`) gives, at every position and lag, the
log-probabilities of the target from the symbols after it alone. Extra head sets
``given:<state>`` (for each real state and its ``shuffled:`` control) add an MLP of the state to
those log-probabilities: a residual decoder that can only gain by reading the state. The
baseline itself is scored as the state ``backward``, so the conditional memory
``CE(backward) − CE(given:<state>)`` (:meth:`~memsig.probe.signature.Signature.conditional_bits`)
compares two decoders on exactly the same positions and blocks.

**Several processes** (Lightning DDP, cached states). Rank 0 caches the states while the others
wait, then every rank reads the same cache; each rank takes its share of every training
minibatch, dev check and test pass. Gradients, dev losses and test counts are those of the whole
minibatch, dev sample and test split (DDP averages the gradients; the dev and test sums are summed
over ranks), so every rank takes the same stopping decisions and builds the same signature.

**Test.** Each head set is scored on every test position with its best weights: confusion
matrices and cross-entropy, plus per-block counts and cross-entropy sums (a block: ``block_len``
consecutive symbols of one stream) that the signature's block bootstrap resamples.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from memsig.probe.backward import STATE as BACKWARD
from memsig.probe.backward import BackwardDecoder, LaterSymbolsTable
from memsig.probe.cache import SplitStates, cached_split
from memsig.probe.controls import check_controls, control_spec, random_copy
from memsig.probe.heads import BatchedMLPHeads, HeadAdam
from memsig.probe.signature import GIVEN, Signature, head_state
from memsig.probe.targets import (
    LeftContext,
    bigram_labels,
    check_lag_reach,
    confusion_counts,
    label_prior,
    lag_targets,
    next_symbol_counts,
    resolve_probe,
    target_labels,
)
from memsig.states import StateBatch, StateSource

log = logging.getLogger(__name__)
Control = Literal["random", "shuffled"]


class PositionChunks(Dataset):
    """Minibatches of positions ``0 … n-1``: item i is the i-th chunk of ``size`` positions of one
    fixed random permutation (``seed``); a resumable loader shuffles the chunks every epoch."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.size = size

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"positions": self.order[i * self.size : (i + 1) * self.size]}


class SpanChunks(Dataset):
    """``positions`` ``[N]`` in consecutive chunks of ``size`` (evaluation order)."""

    def __init__(self, positions: Tensor, size: int) -> None:
        self.positions, self.size = positions, size

    def __len__(self) -> int:
        return math.ceil(len(self.positions) / self.size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"positions": self.positions[i * self.size : (i + 1) * self.size]}


class MultiHeadProbe(L.LightningModule):
    """Memory probe: decoder (δ, s) reads state s at t and predicts the label at t − δ.

    Args:
        source: the frozen model (never trained, never saved with the probe).
        states: probed states; ``"layer1.c+layer1.h"`` concatenates. Default: the
            source's ``c`` states if it has any (the paper probes LSTM cell states), else all.
        lags: the lags δ (default 1…20; 0 and negative lags allowed, see targets).
        width: hidden units per decoder, or ``"auto"``: the paper's rule, at least as
            many decoder parameters as the kernel + input projection behind the state
            (``source.kernel_params``), ``ceil(P / (D + C))`` for one hidden layer.
        max_width: cap on ``auto`` widths (CPU budget); the cap is reported in meta.
        hidden_layers: hidden layers per decoder (0 = linear decoder).
        keep_probs: dropout keep probabilities to sweep (one head set each).
        seeds: probe seeds, one head set each (their spread is the probe-training uncertainty).
        lr, weight_decay: Adam settings for the heads.
        batch_positions: positions per optimizer step (cached states).
        positions_per_batch: positions sampled from each model batch (``cache=False``; None: all).
        eval_every: training steps between dev checks.
        dev_positions: dev positions a check scores (a fixed sample; None: all).
        patience, min_rel_improvement, min_improvement: the stopping rule (module docstring;
            ``min_improvement`` in nats).
        anneals, anneal_factor: learning-rate drops per head at its plateaus before it converges.
        patience_fraction: the plateau window grows to this fraction of a head's checks so far.
        max_steps: training steps at most (a guard; heads still improving are unconverged).
        common_positions: score dev/test only where every lag has a target.
        controls: ``random`` and/or ``shuffled`` (see module docstring).
        target: ``symbol`` (the input symbol) or ``bigram`` (the bigram ending there).
        cache: train from states cached once (True) or streamed from the model (False).
        cache_dir: where caches live and are reused (None: a temporary folder for this run).
        cache_dtype: ``float16`` or ``float32`` storage of cached states.
        block_len: symbols of one stream per test bootstrap block.
        baseline_order: order of the backward-context baseline that ``given:`` decoders add to
            (module docstring; None: no conditional decoders).
        seed: seed of the positions' order, the heads' initialisation and the random control.
    """

    def __init__(
        self,
        source: StateSource,
        states: list[str] | None = None,
        lags: list[int] | None = None,
        width: int | Literal["auto"] = "auto",
        max_width: int | None = 1024,
        hidden_layers: int = 1,
        keep_probs: list[float] | None = None,
        seeds: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_positions: int = 1024,
        positions_per_batch: int | None = 1024,
        eval_every: int = 100,
        dev_positions: int | None = 16384,
        patience: int = 6,
        min_rel_improvement: float = 0.001,
        min_improvement: float = 0.001,
        anneals: int = 2,
        anneal_factor: float = 0.1,
        patience_fraction: float = 0.0,
        max_steps: int = 100_000,
        common_positions: bool = False,
        controls: list[Control] | None = None,
        target: Literal["symbol", "bigram"] = "symbol",
        cache: bool = True,
        cache_dir: str | None = None,
        cache_dtype: str = "float16",
        block_len: int = 256,
        baseline_order: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        states, lags = resolve_probe(source, states, lags)
        controls = check_controls(controls or [])
        if target not in ("symbol", "bigram"):
            raise ValueError(f"probe.target must be symbol or bigram; got {target!r}")
        if seeds < 1 or patience < 1 or eval_every < 1 or batch_positions < 1:
            raise ValueError("probe.seeds, probe.patience, probe.eval_every and probe.batch_positions must be ≥ 1")
        if baseline_order is not None and (not cache or target != "symbol" or baseline_order < 1):
            raise ValueError(
                "probe.baseline_order (conditional memory) needs cached states, symbol targets and an order ≥ 1: "
                "set probe.cache=true and probe.target=symbol, or probe.baseline_order=null"
            )
        self.save_hyperparameters(ignore=["source"])
        self.hparams.update(states=states, lags=lags, keep_probs=list(keep_probs or [1.0]), controls=controls)
        self._source = [source]  # a list: not a submodule, so never in the optimizer or checkpoint
        self._random = [random_copy(source, seed)] if "random" in controls and not cache else []
        v = len(source.vocab)
        self.num_classes = v * v if target == "bigram" else v
        self.probed = [*states, *(control_spec(c, s) for c in controls for s in states)]
        given = [GIVEN + s for s in self.probed if not s.startswith("random:")] if baseline_order else []
        self.widths: dict[str, int] = {}
        self.groups: list[tuple[str, float, int]] = [
            (s, p, r) for r in range(seeds) for p in self.hparams.keep_probs for s in (*self.probed, *given)
        ]
        heads = []
        for s, p, r in self.groups:
            base = s.split(":")[-1]
            d = sum(source.state_dims[x] for x in base.split("+"))
            w = self.widths.setdefault(base, self._width(source, base, d))
            with torch.random.fork_rng():
                torch.manual_seed(seed * 1000 + r)  # seed r's initialisation, whatever else is probed
                heads.append(
                    BatchedMLPHeads(
                        len(lags), d, w, hidden_layers, self.num_classes, 1 - p, 1 - p, residual=s.startswith(GIVEN)
                    )
                )
        self.heads = nn.ModuleList(heads)
        self.context = LeftContext(max(0, max(lags)) + (1 if target == "bigram" else 0))
        self._gen = torch.Generator().manual_seed(seed)
        self._cache: dict[str, SplitStates] = {}
        self._baseline: LaterSymbolsTable | None = None
        self._train_loader: Any = None
        self._loader_state: dict[str, Any] | None = None
        self._eval: dict[str, Tensor] = {}

    def _width(self, source: StateSource, state: str, d: int) -> int:
        hp = self.hparams
        if hp.width != "auto":
            return int(hp.width)
        if hp.hidden_layers == 0:
            return 0
        kernel = getattr(source, "kernel_params", None)
        p = sum(kernel(x) for x in state.split("+")) if kernel else d * d
        w = math.ceil(p / (d + self.num_classes))
        return min(w, hp.max_width) if hp.max_width else w

    @property
    def source(self) -> StateSource:
        return self._source[0]

    def trainer_settings(self) -> dict[str, Any]:
        """The Lightning trainer settings this probe's stopping rule needs (merge into the trainer's)."""
        hp = self.hparams
        return {
            "max_epochs": -1,
            "max_steps": hp.max_steps,
            "val_check_interval": hp.eval_every,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
        }

    # ------------------------------------------------------------------ data
    def attach(self, datamodule: Any) -> None:
        """Read the splits of ``datamodule`` once every lag is known to have targets in each split
        (:func:`~memsig.probe.targets.check_lag_reach`); the states are cached when the fit starts
        (:meth:`setup`)."""
        check_lag_reach(datamodule, self.hparams.lags, self.hparams.target)
        self._datamodule = datamodule

    def setup(self, stage: str) -> None:
        """Cache the splits (once per fit). Under DDP rank 0 builds the caches while the others wait,
        then every rank opens the same folders memory-mapped: one model pass over each split, and
        every rank reads the same positions (each takes its share of every minibatch, dev check and
        test pass: :meth:`_share`)."""
        if not self.hparams.cache:
            if self._world > 1:
                raise ValueError("a probe on several processes (DDP) needs cached states: set probe.cache=true")
            return
        if self._cache:
            return
        if self._rank == 0:
            self._build_caches()
        self.trainer.strategy.barrier("probe state cache")
        if self._rank != 0:
            self._build_caches()

    @property
    def _rank(self) -> int:
        return self.trainer.global_rank if self._trainer is not None else 0

    @property
    def _world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _share(self, positions: Tensor) -> Tensor:
        """This rank's share ``[≈N / ranks]`` of ``positions`` ``[N]`` (all of them on one process)."""
        return positions[self._rank :: self._world]

    def _summed(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks (itself on one process): the same tensor on every rank."""
        if self._world == 1:
            return t
        return self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").to(t.device)

    def _build_caches(self) -> None:
        hp, datamodule = self.hparams, self._datamodule
        specs = list(self.probed)
        for split in ("train", "dev", "test"):
            self._cache[split] = cached_split(
                self.source,
                datamodule,
                split,
                specs,
                hp.lags,
                hp.target,
                hp.controls,
                hp.seed,
                hp.cache_dtype,
                hp.cache_dir,
                hp.block_len,
                progress=self._rank == 0,
            )

        train = self._cache["train"]
        self._scale = {s: standardizer(train.states[s]) for s in specs}
        if hp.baseline_order:
            decoder = BackwardDecoder(datamodule, hp.baseline_order)
            reads = decoder.choose_reads(datamodule, hp.lags)
            self._baseline = LaterSymbolsTable(decoder, hp.lags, reads, list(self._cache.values()))

    def cache_bytes(self) -> int:
        """Bytes of the cached states, targets and blocks of every split (0 when streamed)."""
        return sum(c.nbytes for c in self._cache.values())

    def train_dataloader(self) -> DataLoader:
        from memsig.data.loader import ResumableLoader

        if self.hparams.cache:
            chunks = PositionChunks(len(self._cache["train"]), self.hparams.batch_positions, self.hparams.seed)
            loader = ResumableLoader(chunks, shuffle=True, seed=self.hparams.seed)  # the order is the seed's alone
        else:
            loader = ResumableLoader(self._datamodule.dataset("train"), shuffle=False)
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader:
        if not self.hparams.cache:
            return DataLoader(self._datamodule.dataset("dev"), batch_size=None)
        n, size = len(self._cache["dev"]), self.hparams.dev_positions
        keep = torch.arange(n)
        if size is not None and size < n:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))[:size].sort().values
        return DataLoader(SpanChunks(self._share(keep), 8192), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        if not self.hparams.cache:
            return DataLoader(self._datamodule.dataset("test"), batch_size=None)
        return DataLoader(SpanChunks(self._share(torch.arange(len(self._cache["test"]))), 8192), batch_size=None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._train_loader is not None:
            checkpoint["probe_train_loader"] = self._train_loader.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._loader_state = checkpoint.get("probe_train_loader")

    # ------------------------------------------------------------------ features
    def _features(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor | None, StateBatch | None]:
        """Features ``[N, D]`` per probed state (and the baseline's log-probabilities ``[K, C, N]``
        as ``backward``), targets and validity ``[N, K]``, the blocks ``[N]`` (cached states) and the
        model's states (streamed) of a batch."""
        if self.hparams.cache:
            cache = self._cache[stage]
            idx = batch["positions"].numpy()
            if stage == "train":  # this rank's share of the minibatch, read from the memory map in order
                idx = self._share(torch.from_numpy(np.sort(idx))).numpy()
            feats = {s: self._standardized(s, cache.features(s, idx)) for s in self.probed}
            if self._baseline is not None:
                feats[BACKWARD] = self._baseline(cache.later[idx]).permute(1, 2, 0).to(self.device)
            y, v = cache.labels(idx)
            blocks = torch.from_numpy(np.asarray(cache.blocks[idx], dtype=np.int64))
            return feats, y.to(self.device), v.to(self.device), blocks, None
        feats, y, v, sb = self._stream_features(batch, stage)
        return feats, y, v, None, sb

    def _standardized(self, spec: str, x: Tensor) -> Tensor:
        mean, std = self._scale[spec]
        return ((x - mean) / std).to(self.device)

    def _labels(self, sb: StateBatch, key: str, carry: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Labels with left context ``[B, ctx + T]`` and the history and mask that go with them."""
        ext = self.context.extend(key, sb.symbols, carry)
        if self.hparams.target == "symbol":
            return ext, sb.history, sb.mask
        # the bigram ending at t - δ needs one more symbol of history than the symbol itself
        return bigram_labels(ext, len(self.source.vocab)), sb.history - 1, sb.mask & (sb.history >= 1)

    def _stream_features(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, StateBatch]:
        """Streamed: features at the chosen positions of one model batch (a sample in training)."""
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
            idx = valid.reshape(-1, k).any(-1).nonzero().squeeze(1)
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

    def _common(self, v: Tensor, stage: str) -> Tensor:
        if stage != "train" and self.hparams.common_positions:
            return v & v.all(-1, keepdim=True)
        return v

    @staticmethod
    def _logits(spec: str, heads: BatchedMLPHeads, feats: dict[str, Tensor], active: Tensor | None = None) -> Tensor:
        """``[K', C, N]`` the logits of head set ``spec`` (its heads ``active``; None: all): a
        ``given:`` set adds its MLP to the baseline's log-probabilities."""
        logits = heads(feats[spec.removeprefix(GIVEN)], active)
        if spec.startswith(GIVEN):
            base = feats[BACKWARD]
            logits = logits + (base if active is None else base[active])
        return logits

    @staticmethod
    def _head_ce(logits: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """``[K', N]`` CE of logits ``[K', C, N]`` at ``y [N, K']``, 0 where ``v`` is False."""
        ce = F.cross_entropy(logits, y.T, reduction="none")
        return torch.where(v.T, ce, torch.zeros_like(ce))  # a baseline's -inf off the targets stays out

    @classmethod
    def _head_losses(cls, logits: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head summed CE ``[K']`` and counts ``[K']`` of logits ``[K', C, N]`` at ``y, v [N, K']``."""
        return cls._head_ce(logits, y, v).sum(1), v.T.sum(1).float()

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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        feats, y, v, _, _ = self._features(batch, "train")
        counts = self._minibatch_counts(batch, v)
        total, terms = 0.0, 0
        for (s, _, _), heads in zip(self.groups, self.heads):
            active = (~heads.converged).nonzero().squeeze(1)
            if len(active) == 0:
                if self._world > 1:  # DDP reduces every parameter's gradient: a stopped set's are zeros
                    total = total + 0.0 * sum(p.sum() for p in heads.parameters())
                continue
            ce = self._head_ce(self._logits(s, heads, feats, active), y[:, active], v[:, active]).sum(1)
            total = total + (ce / counts[active].clamp(min=1)).sum()
            terms += len(active)
            heads.steps[active] += 1
        if terms == 0:  # every head converged: the stopping check ends the fit
            return None
        # DDP averages the ranks' gradients: this rank's share of the minibatch's mean losses, times
        # the ranks, so their average is the gradient of one process reading the whole minibatch
        loss = total / terms * self._world
        if not torch.isfinite(loss):
            raise FloatingPointError(f"probe loss is {loss.item()} at step {self.global_step}: lower probe.lr")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _minibatch_counts(self, batch: dict[str, Any], v: Tensor) -> Tensor:
        """``[K]`` targets per lag in the whole training minibatch: this rank's ``v`` ``[N, K]`` on
        one process, else read from the cache's labels of every rank's share."""
        if self._world == 1:
            return v.sum(0).float()
        _, whole = self._cache["train"].labels(np.sort(batch["positions"].numpy()))
        return whole.sum(0).float().to(self.device)

    def on_validation_epoch_start(self) -> None:
        k = len(self.hparams.lags)
        self._eval = {
            "ce": torch.zeros(len(self.groups), k, device=self.device),
            "n": torch.zeros(len(self.groups), k, device=self.device),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        feats, y, v, _, _ = self._features(batch, "dev")
        v = self._common(v, "dev")
        for g, ((s, _, _), heads) in enumerate(zip(self.groups, self.heads)):
            active = (~heads.converged).nonzero().squeeze(1)
            if len(active):
                ce, n = self._head_losses(self._logits(s, heads, feats, active), y[:, active], v[:, active])
                self._eval["ce"][g, active] += ce
                self._eval["n"][g, active] += n

    def on_validation_epoch_end(self) -> None:
        # over every rank's dev positions, so every rank takes the same stopping decisions
        dev = self._summed(self._eval["ce"]) / self._summed(self._eval["n"])  # NaN where a head was not evaluated
        hp = self.hparams
        for g, heads in enumerate(self.heads):
            heads.record(
                dev[g],
                hp.patience,
                hp.min_rel_improvement,
                hp.min_improvement,
                hp.anneals,
                hp.anneal_factor,
                hp.patience_fraction,
            )
        converged = torch.cat([h.converged for h in self.heads])
        self.log_dict(
            {"val/best_loss": self.best_dev_loss().mean(), "val/converged_heads": converged.float().mean()},
            prog_bar=True,
        )
        if bool(converged.all()):
            self.trainer.should_stop = True

    def best_dev_loss(self) -> Tensor:
        """``[groups, K]`` each head's best dev loss so far (inf before the first check)."""
        return torch.stack([h.best_loss for h in self.heads])

    def _scored(self) -> list[str]:
        """What the test scores: every head set, then the baseline (``backward``) when there is one."""
        return [s for s, _, _ in self.groups] + [BACKWARD] * (self._baseline is not None)

    def on_test_epoch_start(self) -> None:
        k, c, g = len(self.hparams.lags), self.num_classes, len(self._scored())
        blocks = self._cache["test"].num_blocks if self.hparams.cache else 0
        self._eval = {
            "confusion": torch.zeros(g, k * c * c, dtype=torch.long, device=self.device),
            "ce": torch.zeros(g, k, dtype=torch.float64, device=self.device),
            "forward": torch.zeros(len(self.source.vocab) ** 2, dtype=torch.long, device=self.device),
            "block_correct": torch.zeros(g, blocks * k * c, dtype=torch.long),
            "block_nll": torch.zeros(g, blocks * k * c, dtype=torch.float64),
            "block_support": torch.zeros(blocks * k * c, dtype=torch.long),
        }

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        feats, y, v, blocks, sb = self._features(batch, "test")
        v = self._common(v, "test")
        c, k = self.num_classes, len(self.hparams.lags)
        lag = torch.arange(k, device=y.device)
        if blocks is not None:  # cell (block, lag, true symbol) of every valid (position, lag)
            cell = ((blocks.to(y.device)[:, None] * k + lag) * c + y)[v].cpu()
            self._eval["block_support"] += torch.bincount(cell, minlength=len(self._eval["block_support"]))
        scored = [self._logits(s, heads, feats) for (s, _, _), heads in zip(self.groups, self.heads)]
        if self._baseline is not None:
            scored.append(feats[BACKWARD])
        for g, logits in enumerate(scored):
            ce = self._head_ce(logits, y, v)  # [K, N]
            self._eval["ce"][g] += ce.sum(1).double()
            pred = logits.argmax(1).T  # [N, K]
            self._eval["confusion"][g] += confusion_counts(pred, y, v, c)
            if blocks is not None:
                hit = cell[(pred == y)[v].cpu()]
                self._eval["block_correct"][g] += torch.bincount(hit, minlength=self._eval["block_correct"].shape[1])
                self._eval["block_nll"][g].index_add_(0, cell, ce.T[v].double().cpu())
        if sb is not None and sb.next_logits is not None:  # the model's own next-symbol confusion
            self._eval["forward"] += next_symbol_counts(sb).to(self.device)

    def on_test_epoch_end(self) -> None:
        self._eval = {key: self._summed(t) for key, t in self._eval.items()}  # every rank's test positions

    # --------------------------------------------------------------- the result
    def chosen_keep_prob(self) -> float:
        """The swept keep probability with the lowest mean best-dev-loss over the real states' heads."""
        best = self.best_dev_loss()
        real = set(self.hparams.states)
        scores = {
            p: float(best[[i for i, (s, q, _) in enumerate(self.groups) if q == p and s in real]].mean())
            for p in self.hparams.keep_probs
        }
        return min(scores, key=lambda p: (math.isnan(scores[p]), scores[p]))

    def convergence(self) -> dict[str, Any]:
        """Per head set (``<state>@<keep prob>#<seed>``): steps trained, best dev loss and converged, per lag."""
        return {
            f"{s}@{p}#{r}": {
                "steps": h.steps.tolist(),
                "best_dev_loss": [round(float(x), 5) for x in h.best_loss],
                "converged": h.converged.tolist(),
            }
            for (s, p, r), h in zip(self.groups, self.heads)
        }

    def signature(self, prior: np.ndarray, symbols: list[str], meta: dict[str, Any] | None = None) -> Signature:
        """The signature of the last test run (call after ``trainer.test``): the chosen keep
        probability's head sets, pooled over the seeds."""
        if "confusion" not in self._eval:
            raise RuntimeError("run trainer.test(probe, ...) before asking for the signature")
        p = self.chosen_keep_prob()
        hp = self.hparams
        seeds, c, k, g = hp.seeds, self.num_classes, len(hp.lags), len(self._scored())
        baseline = list(range(len(self.groups), g))  # the same row in every seed's list
        idx = [
            [i for i, (s_, q, r) in enumerate(self.groups) if q == p and r == seed] + baseline for seed in range(seeds)
        ]
        confusion = self._eval["confusion"].view(g, k, c, c).cpu().numpy()
        pooled = sum(confusion[ix] for ix in idx)
        per_seed_ce = [self._eval["ce"][ix].cpu().numpy() for ix in idx]
        counts = confusion[idx[0]].sum((-1, -2))
        ce_bits = np.where(counts > 0, sum(per_seed_ce) / seeds / np.maximum(counts, 1) / math.log(2), np.nan)
        v = len(self.source.vocab)
        if hp.cache:
            fwd = self._cache["test"].forward
        else:
            fwd = self._eval["forward"].view(v, v).cpu().numpy()
        if hp.target != "symbol" or fwd is None or not fwd.sum():
            fwd = None
        blocks = self._cache["test"].num_blocks if hp.cache else 0
        block_correct = block_support = block_nll = None
        if blocks:
            bc = self._eval["block_correct"].view(g, blocks, k, c).numpy()
            block_correct = np.stack([bc[ix].transpose(1, 0, 2, 3) for ix in idx])  # [R, B, S, K, C]
            bn = self._eval["block_nll"].view(g, blocks, k, c).numpy()
            block_nll = np.stack([bn[ix].transpose(1, 0, 2, 3) for ix in idx])
            support = self._eval["block_support"].view(blocks, k, c).numpy()
            block_support = np.repeat(support[:, None], len(idx[0]), axis=1)  # [B, S, K, C]
        convergence = self.convergence()
        reads = {"later_symbols": self._baseline.reads} if self._baseline is not None else {}
        info = {
            "probe": {"kind": "mlp", **dict(hp), "widths": self.widths, "keep_prob": p, **reads},
            "convergence": {key: val for key, val in convergence.items() if key.split("@")[1].startswith(f"{p}#")},
            "dev_loss": {key: val["best_dev_loss"] for key, val in convergence.items()},
            **(meta or {}),
        }
        return Signature(
            [self._scored()[i] for i in idx[0]],
            list(hp.lags),
            list(symbols),
            pooled,
            ce_bits,
            np.asarray(prior, dtype=np.float64),
            fwd,
            info,
            seeds=seeds,
            block_correct=block_correct,
            block_support=block_support,
            block_nll=block_nll,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return HeadAdam(list(self.heads), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def standardizer(states: np.ndarray, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation ``[D]`` of every column of ``states`` ``[N, D]`` (read in chunks;
    a constant column keeps scale 1). Decoders read standardised states: the same decoder family
    (the first layer absorbs the affine map), far better conditioned for the optimizer."""
    total = torch.zeros(states.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(states), chunk):
        x = torch.from_numpy(np.asarray(states[start : start + chunk], dtype=np.float64))
        total += x.sum(0)
        squares += (x * x).sum(0)
    mean = total / len(states)
    std = (squares / len(states) - mean**2).clamp(min=0).sqrt()
    return mean.float(), torch.where(std > 1e-6, std, 1.0).float()


def fit_probe(
    probe: MultiHeadProbe,
    datamodule: Any,
    trainer: L.Trainer,
    ckpt_path: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Signature:
    """Cache the states, train every decoder until it converges (each keeps its best on dev),
    score on test; the signature. ``trainer`` must carry :meth:`MultiHeadProbe.trainer_settings`.
    Logs a warning naming any head that stopped unconverged."""
    probe.attach(datamodule)
    trainer.fit(probe, ckpt_path=ckpt_path)
    trainer.test(probe, verbose=False)
    target = probe.hparams.target
    prior = label_prior(datamodule.ids("train"), len(probe.source.vocab), target)
    if probe.hparams.cache:
        cache = {"bytes": probe.cache_bytes(), "folders": [str(c.folder) for c in probe._cache.values()]}
        meta = {**(meta or {}), "state_cache": cache}
    sig = probe.signature(prior, target_labels(probe.source, target), meta)
    unconverged = unconverged_heads(sig)
    if unconverged:
        log.warning(
            "%d probe heads stopped before converging (max_steps or max_time): %s. Their recall is a lower "
            "bound; raise probe.max_steps or trainer.max_time.",
            len(unconverged),
            ", ".join(unconverged),
        )
    return sig


def unconverged_heads(sig: Signature) -> list[str]:
    """``<state> δ=<lag>`` (with the seed when several) of every head the signature marks unconverged."""
    out = []
    lags = sig.lags
    for key, record in sig.meta.get("convergence", {}).items():
        state, seed = head_state(key), key.rpartition("#")[2]
        for lag, ok in zip(lags, record["converged"]):
            if not ok:
                out.append(f"{state} δ={lag}" + (f" (seed {seed})" if sig.seeds > 1 else ""))
    return out
