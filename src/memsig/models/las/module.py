"""Listen, Attend and Spell (Chan et al. 2016) as a LightningModule, with an optional CTC head.

Listener (:mod:`.listener`) → attention (:mod:`.attention`) → speller (:mod:`.speller`).
Training minimises ``(1 − w) · CE(speller) + w · CTC(head on listener layer ctc_layer)
+ g · guide`` where ``guide`` pulls the attention weights toward the frames that speak each
grapheme by CTC forced alignment (:func:`~.attention.guide_penalty`): the CTC loss teaches
the encoder a monotonic alignment early and the guide puts the attention on it, which
plain LAS on a few hours of speech finds late or never. Validation and test decode (greedy, or beam search
with ``beam_size > 1``) and log the character and word error rates ``cer``/``wer``
(and ``ctc_cer`` of the CTC head's best path).

States for memory signatures (:meth:`LAS.states`), per grapheme position t of the
transcript, where "after consuming symbol t" means:

* ``speller{k}.h``, ``speller{k}.c``, ``speller.query`` — the decoder's LSTM states and its
  attention query vector at the step that reads grapheme t (teacher forcing), i.e. the
  step that predicts grapheme t + 1;
* ``listener{l}``, ``listener{l}.fwd``, ``listener{l}.bwd`` — encoder layer l at the frame
  that speaks grapheme t (:mod:`.align`), both directions or one. A bidirectional state
  has heard the future too: probe negative lags for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from memsig.models.las.align import attention_centres, ctc_centres, frames_at
from memsig.models.las.attention import Attention, diagonal_centres, guide_penalty
from memsig.models.las.decode import beam_search, ctc_greedy, greedy
from memsig.models.las.listener import PyramidalListener
from memsig.models.las.speller import Speller
from memsig.models.lm_base import divergence
from memsig.states import StateBatch
from memsig.vocab import Vocab

Alignment = Literal["ctc", "attention"]


class LAS(L.LightningModule):
    """Args:
    vocab: the grapheme set (a :class:`Vocab` or its ``to_dict()``).
    feature_size: input features per frame (``n_mels``).
    frame_shift_ms, frame_window_ms: the feature frames' hop and window (for lengths
        in seconds and each layer's frame span).
    listener_hidden, reductions, listener_dropout: the pyramidal BiLSTM
        (:class:`~.listener.PyramidalListener`).
    embedding_size, speller_hidden, speller_layers: the speller.
    attention_size, location: attention dimension; location-aware or content-based.
    ctc_layer: listener layer (1-based) with a CTC head, or None; ctc_weight its loss weight.
    label_smoothing: on the speller's cross-entropy.
    guided_attention: weight of the guided-attention loss (:func:`~.attention.guide_penalty`;
        0 turns it off).
    guide: pull the attention toward the diagonal (free width ``guide_width`` of the
        utterance), or toward each grapheme's frame by CTC forced alignment (free width
        ``guide_frames`` frames; the diagonal during the LR warm-up, while CTC is untrained).
    sampling: scheduled-sampling rate (probability of feeding back the model's own
        previous grapheme during training); 0 is pure teacher forcing.
    lr, weight_decay, warmup_steps: AdamW with a linear warm-up over the first updates,
        then halved when ``val/cer`` stops improving (``scheduler: plateau``) or constant.
    beam_size, length_norm: test decoding (1 = greedy); validation is greedy.
    max_chars_per_second: decoding stops after ``duration · this`` graphemes.
    alignment: how encoder states are placed on graphemes (``ctc`` needs ``ctc_layer``).
    """

    ARCH_KEYS = (
        "feature_size",
        "listener_hidden",
        "reductions",
        "embedding_size",
        "speller_hidden",
        "speller_layers",
        "attention_size",
        "location",
        "ctc_layer",
    )

    def __init__(
        self,
        vocab: Vocab | dict[str, Any],
        feature_size: int = 80,
        frame_shift_ms: float = 10.0,
        frame_window_ms: float = 25.0,
        listener_hidden: int = 192,
        reductions: Sequence[int] = (2, 2, 2),
        listener_dropout: float = 0.1,
        embedding_size: int = 64,
        speller_hidden: int = 256,
        speller_layers: int = 1,
        attention_size: int = 128,
        location: bool = True,
        ctc_layer: int | None = 2,
        ctc_weight: float = 0.5,
        label_smoothing: float = 0.1,
        guided_attention: float = 1.0,
        guide: Literal["diagonal", "ctc"] = "ctc",
        guide_width: float = 0.2,
        guide_frames: float = 1.5,
        sampling: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        warmup_steps: int = 300,
        scheduler: Literal["plateau", "none"] = "plateau",
        beam_size: int = 1,
        length_norm: float = 1.0,
        max_chars_per_second: float = 25.0,
        alignment: Alignment = "ctc",
    ) -> None:
        super().__init__()
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(dict(vocab))
        reductions = [int(r) for r in reductions]
        if ctc_layer is not None and not 1 <= ctc_layer <= len(reductions):
            raise ValueError(f"model.ctc_layer must be a listener layer 1..{len(reductions)} or null; got {ctc_layer}")
        if alignment == "ctc" and ctc_layer is None:
            raise ValueError("model.alignment=ctc needs a CTC head (model.ctc_layer); or use alignment=attention")
        if alignment not in ("ctc", "attention"):
            raise ValueError(f"model.alignment must be ctc or attention; got {alignment!r}")
        self.save_hyperparameters(ignore=["vocab"], logger=False)
        self.hparams["vocab"] = self.vocab.to_dict()
        self.hparams["reductions"] = reductions
        v = len(self.vocab)
        self.eos = v  # speller classes: symbols, then <eos>; the CTC blank is id v as well
        self.listener = PyramidalListener(feature_size, listener_hidden, reductions, listener_dropout)
        key = 2 * listener_hidden
        attention = Attention(speller_hidden, key, attention_size, location)
        self.speller = Speller(v + 1, embedding_size, speller_hidden, speller_layers, key, attention)
        self.ctc_head = nn.Linear(key, v + 1) if ctc_layer is not None else None
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{m}": cls()
                for stage in ("val", "test")
                for m, cls in (("cer", CharErrorRate), ("wer", WordErrorRate), ("ctc_cer", CharErrorRate))
            }
        )
        self.eval_loss = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})  # per utterance

    # ------------------------------------------------------------------ the network
    def _targets(self, tokens: Tensor, token_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Speller inputs ``[B, L+1]`` (``<sos>`` + transcript) and targets (transcript +
        ``<eos>``, −100 past it)."""
        b, length = tokens.shape
        pos = torch.arange(length + 1, device=tokens.device)[None]
        lens = token_lengths[:, None]
        inputs = torch.cat([tokens.new_full((b, 1), self.speller.sos), tokens], 1)
        padded = torch.cat([tokens, tokens.new_zeros(b, 1)], 1)
        targets = torch.where(pos < lens, padded, torch.where(pos == lens, self.eos, -100))
        inputs = torch.where(pos <= lens, inputs, 0)
        return inputs, targets

    def _ctc_log_probs(self, encoded: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        x, lengths = encoded[self.hparams.ctc_layer - 1]
        return F.log_softmax(self.ctc_head(x), -1), lengths

    def _losses(
        self, batch: dict[str, Any], sampling: float, guide: bool = True
    ) -> tuple[Tensor, dict[str, Tensor], list]:
        """The training loss and its parts, and the listener outputs; ``guide=False`` leaves out the
        guided-attention term (evaluation reports the recognition loss alone)."""
        tokens, lens = batch["tokens"], batch["token_lengths"]
        encoded = self.listener(batch["features"], batch["feature_lengths"])
        inputs, targets = self._targets(tokens, lens)
        guided = self.hparams.guided_attention
        logits, trace = self.speller.teacher_forced(*encoded[-1], inputs, sampling, trace=guide and guided > 0)
        att = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=-100, label_smoothing=self.hparams.label_smoothing
        )
        parts = {"att_loss": att}
        loss = att
        if self.ctc_head is not None:
            lp, lp_lens = self._ctc_log_probs(encoded)
            ctc = F.ctc_loss(lp.transpose(0, 1), tokens, lp_lens, lens, blank=self.eos, zero_infinity=True)
            parts["ctc_loss"] = ctc
            w = self.hparams.ctc_weight
            loss = (1 - w) * att + w * ctc
        if trace is not None:
            parts["guide_loss"] = self._guide(trace.weights, encoded, tokens, lens)
            loss = loss + guided * parts["guide_loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"LAS loss is {loss.item()} at step {self.global_step} (parts: "
                f"{ {k: round(v.item(), 4) for k, v in parts.items()} }); lower model.lr, keep "
                "trainer.gradient_clip_val set, or check the features for NaN/inf (corrupt audio)"
            )
        return loss, parts, encoded

    def _guide(self, weights: Tensor, encoded: list[tuple[Tensor, Tensor]], tokens: Tensor, lens: Tensor) -> Tensor:
        """The guided-attention loss: toward the diagonal (``guide: diagonal``, and during the LR
        warm-up), or toward each grapheme's frame by CTC forced alignment (``guide: ctc``)."""
        hp = self.hparams
        frames = encoded[-1][1].to(weights.device)
        diagonal = diagonal_centres(lens + 1, frames, weights.shape[1])
        if hp.guide == "diagonal" or self.global_step < hp.warmup_steps or self.ctc_head is None:
            return guide_penalty(weights, diagonal, hp.guide_width * frames[:, None])
        with torch.no_grad():
            lp, lp_lens = self._ctc_log_probs(encoded)
            centres, _ = ctc_centres(lp, lp_lens, tokens, lens, self.eos, self.listener.reduction(hp.ctc_layer))
        at = (centres / self.listener.reduction(self.listener.num_layers) - 0.5).to(
            weights.device
        )  # frame j spans [j, j+1)
        at = torch.cat([at, at.new_full((len(at), weights.shape[1] - at.shape[1]), float("nan"))], 1)
        return guide_penalty(weights, at, torch.tensor(hp.guide_frames, device=weights.device))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, parts, _ = self._losses(batch, self.hparams.sampling)
        if why := divergence(parts["att_loss"], self.eos + 1):
            raise FloatingPointError(
                f"LAS attention loss is {parts['att_loss'].item():.4g} at step {self.global_step}{why}: lower "
                "model.lr, keep trainer.gradient_clip_val set, or resume from the last good checkpoint (ckpt_path=...)"
            )
        b = len(batch["token_lengths"])
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=b)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Linear learning-rate warm-up over the first ``warmup_steps`` updates."""
        warm = self.hparams.warmup_steps
        if warm and self.global_step <= warm:
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = self.hparams.lr * min(1.0, (self.global_step + 1) / warm)

    # ------------------------------------------------------------------ decoding
    def max_len(self, feature_lengths: Tensor) -> Tensor:
        """The most graphemes decoded per utterance: ``[B]`` from its duration."""
        seconds = feature_lengths.float() * self.hparams.frame_shift_ms / 1000
        return (seconds * self.hparams.max_chars_per_second).ceil().long() + 5

    @torch.no_grad()
    def transcribe(self, features: Tensor, feature_lengths: Tensor, beam_size: int | None = None) -> list[str]:
        """Transcripts of a batch: ``features [B, T, F]``, ``feature_lengths [B]``."""
        return self._decode(self.listener(features, feature_lengths), feature_lengths, beam_size or 1)

    def _decode(self, encoded: list[tuple[Tensor, Tensor]], feature_lengths: Tensor, beam_size: int) -> list[str]:
        cap = self.max_len(feature_lengths)
        if beam_size > 1:
            ids = beam_search(self.speller, *encoded[-1], cap, beam_size, self.hparams.length_norm)
        else:
            ids = greedy(self.speller, *encoded[-1], cap)
        return [self.vocab.decode(r) for r in ids]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        loss, _, encoded = self._losses(batch, 0.0, guide=False)
        self.eval_loss[stage].update(loss, weight=len(batch["texts"]))
        beam = self.hparams.beam_size if stage == "test" else 1
        hyps = self._decode(encoded, batch["feature_lengths"], beam)
        self.metrics[f"{stage}_cer"].update(hyps, batch["texts"])
        self.metrics[f"{stage}_wer"].update(hyps, batch["texts"])
        if self.ctc_head is not None:
            lp, lens = self._ctc_log_probs(encoded)
            ctc = [self.vocab.decode(r) for r in ctc_greedy(lp, lens, self.eos)]
            self.metrics[f"{stage}_ctc_cer"].update(ctc, batch["texts"])

    def _log_eval(self, stage: str) -> None:
        # over every rank's utterances (a rank may hold more batches than another): torchmetrics
        # reduces the weighted sums across ranks in compute(), so rank 0 logs the global mean
        self.log(f"{stage}/loss", self.eval_loss[stage].compute(), sync_dist=False)
        self.eval_loss[stage].reset()
        names = ("cer", "wer", "ctc_cer") if self.ctc_head is not None else ("cer", "wer")
        for m in names:
            metric = self.metrics[f"{stage}_{m}"]
            self.log(f"{stage}/{m}", metric.compute(), prog_bar=m == "cer")
            metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return {"optimizer": opt}
        if hp.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/cer", "strict": False}}
        raise ValueError(f"model.scheduler must be plateau or none; got {hp.scheduler!r}")

    # ------------------------------------------------------------------ states
    @property
    def state_names(self) -> list[str]:
        listener = [
            f"listener{l}{part}" for l in range(1, self.listener.num_layers + 1) for part in ("", ".fwd", ".bwd")
        ]
        speller = [f"speller{k}.{s}" for k in range(1, len(self.speller.cells) + 1) for s in ("h", "c")]
        return [*listener, *speller, "speller.query"]

    @property
    def state_dims(self) -> dict[str, int]:
        h, s = self.hparams.listener_hidden, self.hparams.speller_hidden
        dims = {n: (h if n.endswith((".fwd", ".bwd")) else 2 * h) for n in self.state_names if n.startswith("listener")}
        dims.update({n: s for n in self.state_names if n.startswith("speller") and n != "speller.query"})
        dims["speller.query"] = self.hparams.attention_size
        return dims

    def frame_span_ms(self, layer: int) -> float:
        """Audio one frame of listener ``layer`` (1-based) is computed from before recurrence:
        its stacked feature frames, window included."""
        hp = self.hparams
        return (self.listener.reduction(layer) - 1) * hp.frame_shift_ms + hp.frame_window_ms

    def state_notes(self) -> dict[str, str]:
        """A line per state for reports: what it sees (frame rate and span, direction)."""
        notes = {}
        for l in range(1, self.listener.num_layers + 1):
            rate = 1000 / (self.hparams.frame_shift_ms * self.listener.reduction(l))
            base = f"listener layer {l}: {rate:g} frames/s, {self.frame_span_ms(l):g} ms of audio per frame"
            notes[f"listener{l}"] = base + ", both directions (sees the future: negative lags)"
            notes[f"listener{l}.fwd"] = base + ", forward direction"
            notes[f"listener{l}.bwd"] = base + ", backward direction (sees only the future and present)"
        for k in range(1, len(self.speller.cells) + 1):
            for s in ("h", "c"):
                notes[f"speller{k}.{s}"] = f"speller layer {k} {s}, per grapheme (teacher forcing)"
        notes["speller.query"] = "speller attention query vector, per grapheme (teacher forcing)"
        return notes

    def kernel_params(self, name: str) -> int:
        """Parameters of the recurrence behind state ``name`` (sizes the probe's ``width: auto``)."""
        if name.startswith("listener"):
            layer = self.listener.layers[int(name.removeprefix("listener").split(".")[0]) - 1]
            total = sum(p.numel() for p in layer.parameters())
            return total // 2 if name.endswith((".fwd", ".bwd")) else total
        if name == "speller.query":
            return sum(p.numel() for p in self.speller.attention.query.parameters())
        return sum(
            p.numel() for p in self.speller.cells[int(name.removeprefix("speller").split(".")[0]) - 1].parameters()
        )

    @torch.no_grad()
    def states(self, batch: dict[str, Any]) -> StateBatch:
        """Frozen states per grapheme (see the module docstring); symbols are the transcript."""
        self.eval()
        tokens, lens = batch["tokens"], batch["token_lengths"]
        encoded = self.listener(batch["features"], batch["feature_lengths"])
        inputs, _ = self._targets(tokens, lens)
        logits, trace = self.speller.teacher_forced(*encoded[-1], inputs, trace=True)
        length = tokens.shape[1]
        # step i reads grapheme i − 1: the state after consuming grapheme t is step t + 1's
        states = {
            f"speller{k + 1}.{s}": getattr(trace, s)[k][:, 1 : length + 1]
            for k in range(len(trace.h))
            for s in ("h", "c")
        }
        states["speller.query"] = trace.query[:, 1 : length + 1]
        centres = self.grapheme_centres(encoded, lens, tokens, trace.weights)
        h = self.hparams.listener_hidden
        for l, (x, xl) in enumerate(encoded, start=1):
            idx = frames_at(centres, self.listener.reduction(l), xl).to(x.device)
            at = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
            states.update({f"listener{l}": at, f"listener{l}.fwd": at[..., :h], f"listener{l}.bwd": at[..., h:]})
        mask = (torch.arange(length, device=tokens.device)[None] < lens[:, None]) & ~centres.isnan().to(tokens.device)
        history = torch.arange(length, device=tokens.device).expand_as(tokens)
        return StateBatch(
            states=states, symbols=tokens, mask=mask, history=history, next_logits=logits[:, 1 : length + 1, : self.eos]
        )

    def grapheme_centres(
        self, encoded: list[tuple[Tensor, Tensor]], token_lengths: Tensor, tokens: Tensor, weights: Tensor
    ) -> Tensor:
        """Centre of each grapheme's audio ``[B, L]`` in input frames (:mod:`.align`); NaN
        where it cannot be placed (the utterance is then masked out of the signature)."""
        if self.hparams.alignment == "attention":
            return attention_centres(weights, token_lengths, self.listener.reduction(self.listener.num_layers))
        lp, lp_lens = self._ctc_log_probs(encoded)
        centres, _ = ctc_centres(
            lp, lp_lens, tokens, token_lengths, self.eos, self.listener.reduction(self.hparams.ctc_layer)
        )
        return centres

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["memsig"] = {
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "vocab": self.vocab.to_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from memsig.models.checkpoint import check_compatible

        check_compatible(checkpoint, self)
