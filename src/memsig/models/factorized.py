"""Factorized-kernel character LM: recurrent kernels ``W(λ) = W_0 + Σ_k λ_k u_k v_kᵀ``.

Reference §1 ("Factorized-kernel LM") and fig. 6. The network, :class:`FactorizedCharRNN`, is
the :class:`~memsig.models.char_rnn.CharRNN` whose every recurrent kernel (``weight_hh``,
``[G·H, H]``, G = 4 gates for an LSTM, 3 for a GRU) is the base ``W_0`` plus K rank-one bases
weighted by the input statistics λ of the batch: one basis per symbol bigram (K = V², 31² = 961
here) with ``data/lambdas=bigram`` (:mod:`memsig.data.lambdas` computes λ; the batch carries it
as ``lam``). Per layer the bases are two matrices, ``U`` ``[G·H, K]`` and ``V`` ``[H, K]``, so
``W(λ) = W_0 + U·diag(λ)·Vᵀ``: memory O(K·H), never K full matrices.

Two paths, picked by the shape of the batch's λ:

- **shared** λ ``[K]`` (scopes ``cluster`` and ``domain``; per-basis signatures): the kernel
  is folded once per batch (one ``[G·H, K] @ [K, H]`` product) and the fused ``nn.LSTM`` /
  ``nn.GRU`` runs with it through ``torch.func.functional_call``; gradients reach
  ``W_0``, ``U`` and ``V`` through the fold. Costs about what the plain LSTM costs.
- **per row** λ ``[B, K]`` (scope ``segment``): a time loop. The input products
  ``W_ih·x_t`` of all t are one matmul before it; each step is one matmul
  ``h·[W_0; Vᵀ]ᵀ`` and one ``(·λ)·Uᵀ``: O(G·H² + (G+1)·H·K) per row and step.

λ normalisation (``lambda_norm``; normalised frequencies are ~1e-3 each and the bases
barely train on them):

- ``standardize`` (default): ``z = (f − μ) / σ`` per basis, μ, σ over the training
  segments, clipped to ±``lambda_clip``. μ, σ are fitted when training first starts and
  saved with the model, so a model keeps its training corpus' scale when it meets
  another corpus; ``lambda_refit`` fits them again on the data of every fit (domain
  adaptation: a source corpus' small σ of bigrams that are rare there sends the new
  corpus' λ to the clip, the folded kernel grows several-fold, and back-propagation
  through long segments overflows float32 — measured: NaN gradients at the first step
  of Shakespeare → WSJ). z = 0 is the average training text: ``W_0`` alone is the kernel of
  average text. A basis whose bigram never varies in training (σ = 0) gets z = 0 and
  never trains: a pruning candidate by construction.
- ``scale``: ``z = K·f`` (mean 1 per basis); ``none``: ``z = f``.

``trainable=bases`` trains only ``U`` and ``V`` (e.g. adapting a model to a new domain
through its λ-related parameters); ``all`` trains everything.

:class:`FactorizedCharLM` trains it: the :class:`~memsig.models.char_lm.CharLM` with this
network, plus λ's normalisation and ``trainable``. State interface: as the CharLM's
(``layer{l}.c``, ``layer{l}.h``). :class:`FixedLambda` is the same model seen with one fixed,
already normalised λ — the StateSource of the per-basis signatures (:mod:`memsig.tasks.bases`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from memsig.models.char_lm import CharLM
from memsig.models.char_rnn import CharRNN, LayerState, cell_states_from_gates, lstm_cell_states
from memsig.states import StateBatch
from memsig.vocab import Vocab

LambdaNorm = Literal["standardize", "scale", "none"]
log = logging.getLogger(__name__)
_NO_GRADIENTS = (
    "state gradients of the factorized LM are not supported: its kernel depends on λ, which the "
    "gradient windows do not carry; run probe.py without gradients=..."
)


class LowRankBases(nn.Module):
    """K rank-one bases ``u_k v_kᵀ`` of one ``[rows, cols]`` kernel: ``U`` ``[rows, K]``, ``V`` ``[cols, K]``.

    Initialised so that ``U·diag(z)·Vᵀ h`` with unit-scale z is about ``scale`` times as large as a
    unit-scale kernel's ``W_0 h``: V ~ N(0, 1/cols), U ~ N(0, scale²/K).
    """

    def __init__(self, rows: int, cols: int, num_bases: int, scale: float = 0.1) -> None:
        super().__init__()
        self.scale = scale
        self.u = nn.Parameter(torch.empty(rows, num_bases))
        self.v = nn.Parameter(torch.empty(cols, num_bases))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.v, std=1 / math.sqrt(self.v.shape[0]))
        nn.init.normal_(self.u, std=self.scale / math.sqrt(self.u.shape[1]))

    def fold(self, base: Tensor, z: Tensor) -> Tensor:
        """``[rows, cols]`` the kernel ``base + U·diag(z)·Vᵀ`` for one λ ``z`` ``[K]``."""
        return torch.addmm(base, self.u * z, self.v.T)


class FactorizedCharRNN(CharRNN):
    """The :class:`CharRNN` whose recurrent kernels are ``W_0 + U·diag(λ)·Vᵀ`` (see module docstring).

    ``W_0`` is each layer's own ``weight_hh_l0``; every layer takes the normalised λ ``lam``
    (``[K]`` shared, or ``[B, K]`` per row) as its extra input.

    Args:
        vocab_size, cell, num_layers, hidden_size, embedding_size, dropout_embedding, dropout,
            dropout_recurrent: as :class:`CharRNN` (``dropout_recurrent`` drops entries of ``W_0``).
        num_bases: K.
        basis_scale: initial size of the bases' contribution relative to W_0's.
    """

    def __init__(
        self,
        vocab_size: int,
        cell: Literal["lstm", "gru"],
        num_layers: int,
        hidden_size: int,
        embedding_size: int,
        dropout_embedding: float,
        dropout: float,
        dropout_recurrent: float,
        num_bases: int,
        basis_scale: float = 0.1,
    ) -> None:
        super().__init__(
            vocab_size, cell, num_layers, hidden_size, embedding_size, dropout_embedding, dropout, dropout_recurrent
        )
        self.num_bases = num_bases
        gates = 4 if cell == "lstm" else 3
        self.bases = nn.ModuleList(
            LowRankBases(gates * hidden_size, hidden_size, num_bases, basis_scale) for _ in range(num_layers)
        )

    def _w0(self, i: int) -> Tensor:
        """``[G·H, H]`` layer ``i``'s ``W_0``, weight-dropped in training."""
        w = self.layers[i].weight_hh_l0
        p = self.dropout_recurrent
        return F.dropout(w, p) if self.training and p > 0 else w

    def run_layer(self, i: int, x: Tensor, state: LayerState, lam: Tensor | None = None) -> tuple[Tensor, LayerState]:
        """As :meth:`CharRNN.run_layer` with the kernel of λ ``lam`` (``[K]``: folded, ``[B, K]``: per row)."""
        if lam is None:
            raise ValueError("the factorized LM needs λ (lam) for every layer")
        layer = self.layers[i]
        if lam.dim() == 1:  # shared: fold the kernel, run the fused layer
            params = dict(layer.named_parameters())
            params["weight_hh_l0"] = self.bases[i].fold(self._w0(i), lam)
            return functional_call(layer, params, (x, state))
        return self._loop(i, x, state, lam)

    def _loop(self, i: int, x: Tensor, state: LayerState, z: Tensor) -> tuple[Tensor, LayerState]:
        """The per-row path: ``x`` ``[B, T, I]``, ``z`` ``[B, K]`` → outputs ``[B, T, H]``, final state."""
        layer, bases = self.layers[i], self.bases[i]
        hidden = self.hidden_size
        gx = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)  # [B, T, G·H], all t at once
        w = torch.cat([self._w0(i), bases.v.T])  # [G·H + K, H]: h·W_0ᵀ and h·V in one matmul
        u_t = bases.u.T
        lstm = self.cell == "lstm"
        if lstm:
            gx = gx + layer.bias_hh_l0
            h, c = state[0][0], state[1][0]
        else:
            h = state[0]
        outs = []
        for t in range(x.shape[1]):
            a = h @ w.T
            rec = a[:, : w.shape[0] - self.num_bases] + (a[:, -self.num_bases :] * z) @ u_t  # [B, G·H]
            if lstm:
                gi, gf, gg, go = (gx[:, t] + rec).chunk(4, dim=-1)
                c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
                h = torch.sigmoid(go) * torch.tanh(c)
            else:
                rec = rec + layer.bias_hh_l0
                r = torch.sigmoid(gx[:, t, :hidden] + rec[:, :hidden])
                u = torch.sigmoid(gx[:, t, hidden : 2 * hidden] + rec[:, hidden : 2 * hidden])
                n = torch.tanh(gx[:, t, 2 * hidden :] + r * rec[:, 2 * hidden :])
                h = (1 - u) * n + u * h
            outs.append(h)
        out = torch.stack(outs, 1)
        final: LayerState = (h[None], c[None]) if lstm else h[None]
        return out, final

    def cell_states(self, i: int, x: Tensor, h: Tensor, s0: LayerState, lam: Tensor | None = None) -> Tensor:
        """As :meth:`CharRNN.cell_states` with the kernel of λ ``lam``."""
        layer, bases = self.layers[i], self.bases[i]
        if lam.dim() == 1:
            return lstm_cell_states(layer, x, h, s0[0][0], s0[1][0], weight_hh=bases.fold(layer.weight_hh_l0, lam))
        h_prev = torch.cat([s0[0][0].unsqueeze(1), h[:, :-1]], dim=1)
        rec = F.linear(h_prev, layer.weight_hh_l0, layer.bias_hh_l0) + ((h_prev @ bases.v) * lam[:, None]) @ bases.u.T
        return cell_states_from_gates(F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + rec, s0[1][0])

    def kernel_params(self, layer: int) -> int:
        """As :meth:`CharRNN.kernel_params`, plus the layer's bases."""
        return super().kernel_params(layer) + sum(p.numel() for p in self.bases[layer - 1].parameters())


class FactorizedCharLM(CharLM):
    """The :class:`CharLM` that trains a :class:`FactorizedCharRNN` (see module docstring), with
    λ's normalisation (μ, σ fitted on the training data and saved with the model).

    Args:
        vocab, cell, num_layers, hidden_size, embedding_size, dropout_embedding, dropout,
            dropout_recurrent, lr, weight_decay, betas, scheduler: as :class:`CharLM`
            (``dropout_recurrent`` drops entries of ``W_0``).
        statistic: ``bigram`` (K = V²) or ``unigram`` (K = V); must match ``data.lambdas``.
        lambda_norm: ``standardize``, ``scale`` or ``none``.
        lambda_clip: bound on |z| with ``standardize``.
        basis_scale: initial size of the bases' contribution relative to W_0's.
        trainable: ``all`` or ``bases`` (only U and V).
        lambda_refit: fit μ, σ on the training data of every fit, also over weights that came
            with others (``init_from``); else only when they were never fitted.
    """

    ARCH_KEYS = (*CharLM.ARCH_KEYS, "statistic")

    def __init__(
        self,
        vocab: Vocab | dict[str, Any],
        cell: Literal["lstm", "gru"] = "lstm",
        num_layers: int = 1,
        hidden_size: int = 320,
        embedding_size: int = 64,
        statistic: Literal["bigram", "unigram"] = "bigram",
        lambda_norm: LambdaNorm = "standardize",
        lambda_clip: float = 5.0,
        basis_scale: float = 0.1,
        trainable: Literal["all", "bases"] = "all",
        lambda_refit: bool = False,
        **kwargs: Any,
    ) -> None:
        if statistic not in ("bigram", "unigram"):
            raise ValueError(f"model.statistic must be bigram or unigram; got {statistic!r}")
        if lambda_norm not in ("standardize", "scale", "none"):
            raise ValueError(f"model.lambda_norm must be standardize, scale or none; got {lambda_norm!r}")
        if trainable not in ("all", "bases"):
            raise ValueError(f"model.trainable must be all or bases; got {trainable!r}")
        super().__init__(vocab, cell, num_layers, hidden_size, embedding_size, **kwargs)
        self.num_bases = self.net.num_bases
        self.register_buffer("lambda_mean", torch.zeros(self.num_bases))
        self.register_buffer("lambda_std", torch.ones(self.num_bases))
        self.register_buffer("lambda_fitted", torch.tensor(False))

    def build_net(self) -> CharRNN:
        """The :class:`FactorizedCharRNN` of the options: K = V² bases (bigram) or V (unigram)."""
        v = len(self.vocab)
        bases = v * v if self.hparams.statistic == "bigram" else v
        return super().build_net(FactorizedCharRNN, num_bases=bases, basis_scale=self.hparams.basis_scale)

    # ------------------------------------------------------------------------ λ
    def basis_names(self) -> list[str]:
        """The K bases as their statistic: ``"th"`` for a bigram (space shown as ``␣``), or a symbol."""
        labels = self.vocab.labels
        return [a + b for a in labels for b in labels] if self.hparams.statistic == "bigram" else list(labels)

    def fit_lambda_norm(self, mean: Tensor, std: Tensor) -> None:
        """Set μ, σ ``[K]`` of the ``standardize`` normalisation (the training segments' frequencies)."""
        if mean.shape != (self.num_bases,):
            raise ValueError(
                f"λ statistics have {mean.shape[-1]} entries but the model has {self.num_bases} bases; "
                f"set data.lambdas.statistic={self.hparams.statistic}"
            )
        self.lambda_mean.copy_(mean)
        self.lambda_std.copy_(std)
        self.lambda_fitted.fill_(True)

    def normalize(self, f: Tensor) -> Tensor:
        """z ``[..., K]`` from frequencies ``f`` ``[..., K]`` (see module docstring)."""
        if f.shape[-1] != self.num_bases:
            raise ValueError(
                f"the batch's λ has {f.shape[-1]} entries but the model has {self.num_bases} bases; "
                f"set data.lambdas.statistic={self.hparams.statistic}"
            )
        norm = self.hparams.lambda_norm
        if norm == "scale":
            return f * self.num_bases
        if norm == "none":
            return f
        varies = self.lambda_std > 0
        z = (f - self.lambda_mean) / torch.where(varies, self.lambda_std, torch.ones_like(self.lambda_std))
        clip = self.hparams.lambda_clip
        return torch.where(varies, z, torch.zeros_like(z)).clamp(-clip, clip)

    def conditioning(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{"lam": z}``: ``batch["lam_z"]`` (already normalised, e.g. from :class:`FixedLambda`)
        or the normalised ``batch["lam"]``; ``[K]`` or ``[B, K]``."""
        if "lam_z" in batch:
            return {"lam": batch["lam_z"]}
        if "lam" not in batch:
            raise ValueError("the factorized LM needs λ in every batch: add data/lambdas=bigram to the command")
        return {"lam": self.normalize(batch["lam"].float())}

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is None or getattr(dm, "lambdas", None) is None:
            raise ValueError(
                "the factorized LM trains on batches with λ: use a TextDataModule with data/lambdas=bigram"
            )
        if dm.lambdas.scope == "domain":
            log.warning(
                "data.lambdas.scope=domain: λ is the same for every training batch, so W_0 and the bases "
                "cannot be told apart and per-basis signatures mean nothing (use scope=cluster to train)"
            )
        if self.hparams.lambda_norm == "standardize" and (self.hparams.lambda_refit or not bool(self.lambda_fitted)):
            self.fit_lambda_norm(*(t.to(self.device) for t in dm.lambda_moments()))

    def embedded_states(self, emb: Tensor, context: Tensor | None = None, repeat: int = 1) -> dict[str, Tensor]:
        raise NotImplementedError(_NO_GRADIENTS)

    def configure_optimizers(self) -> dict[str, Any]:
        bases_only = self.hparams.trainable == "bases"
        for name, p in self.named_parameters():
            p.requires_grad_(not bases_only or name.startswith("net.bases."))
        return super().configure_optimizers()


class FixedLambda(nn.Module):
    """A :class:`FactorizedCharLM` seen with one fixed, normalised λ ``z`` ``[K]`` (a StateSource).

    ``z = 0`` gives the base kernel alone; one non-zero entry gives "base + one basis".
    """

    def __init__(self, model: FactorizedCharLM, z: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("z", z.float())
        self.vocab, self.state_names, self.state_dims = model.vocab, model.state_names, model.state_dims

    def kernel_params(self, name: str) -> int:
        return self.model.kernel_params(name)

    def states(self, batch: dict[str, Any]) -> StateBatch:
        return self.model.states({**batch, "lam_z": self.z.to(batch["inputs"].device)})
