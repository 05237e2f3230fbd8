"""Character language model: embedding, a stack of single-layer LSTMs or GRUs, projection.

    logits_{t} = W_P · RNN_L(… RNN_1(W_C · onehot(g_t))) + b_P,   predicting g_{t+1}

The stack is built from one-layer ``nn.LSTM``/``nn.GRU`` modules (fused kernels) so every
layer's output sequence is available. The LSTM cell state c_t of every position, which
``nn.LSTM`` does not return, is recomputed from the returned h sequence (see
:func:`lstm_cell_states`): one matmul for all gates plus an elementwise loop.

Regularisation: ``dropout_embedding`` on W_C's output; ``dropout`` on each layer's output
(between layers and before W_P); ``dropout_recurrent`` drops entries of each recurrent
weight matrix W_hh once per batch (weight drop / DropConnect as in AWD-LSTM), the way to
regularise the state path that keeps the fused kernel.

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
from torch.func import functional_call
from torchmetrics import MeanMetric

from memsig.states import StateBatch
from memsig.vocab import Vocab

Cell = Literal["lstm", "gru"]
LayerState = Tensor | tuple[Tensor, Tensor]  # GRU: h [1, B, H]; LSTM: (h, c)
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


def lstm_cell_states(
    layer: nn.LSTM, x: Tensor, h: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor | None = None
) -> Tensor:
    """Cell states of a one-layer batch-first ``nn.LSTM`` at every position.

    Args:
        layer: the LSTM (one layer, unidirectional, batch_first).
        x: ``[B, T, I]`` its input sequence.
        h: ``[B, T, H]`` its output sequence (as returned for ``x`` from ``(h0, c0)``).
        h0, c0: ``[B, H]`` the initial state.
        weight_hh: ``[4H, H]`` the recurrent kernel the run used (default: the layer's own).
    Returns:
        ``[B, T, H]`` c_t for every t.
    """
    h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
    w_hh = layer.weight_hh_l0 if weight_hh is None else weight_hh
    gates = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(h_prev, w_hh, layer.bias_hh_l0)
    return cell_states_from_gates(gates, c0)


def cell_states_from_gates(gates: Tensor, c0: Tensor) -> Tensor:
    """``[B, T, H]`` the LSTM cell states c_t from the gate pre-activations ``[B, T, 4H]``
    (i, f, g, o, as ``nn.LSTM`` orders them) and the initial cell state ``c0`` ``[B, H]``."""
    i, f, g, _ = gates.chunk(4, dim=-1)
    i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
    ig = i * g
    c = torch.empty_like(ig)
    c_t = c0
    for t in range(ig.shape[1]):
        c_t = torch.addcmul(ig[:, t], f[:, t], c_t)
        c[:, t] = c_t
    return c


def _lstm_tangents(
    layer: nn.LSTM, x: Tensor, dx: Tensor, h: Tensor | None, c: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Run LSTM ``layer`` on ``x`` ``[N, W, I]`` from ``(h, c)`` ``[N, H]`` (None: zeros) carrying the
    tangents ``dx`` ``[N, W, K, I]``: returns h ``[N, W, H]``, dh and dc ``[N, W, K, H]``."""
    w_hh = layer.weight_hh_l0
    gx = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0 + layer.bias_hh_l0)  # [N, W, 4H]
    dgx = dx @ layer.weight_ih_l0.T  # [N, W, K, 4H]
    n, steps, k, _ = dgx.shape
    size = w_hh.shape[1]
    h = h if h is not None else x.new_zeros(n, size)
    c = c if c is not None else x.new_zeros(n, size)
    dh, dc = x.new_zeros(n, k, size), x.new_zeros(n, k, size)
    hs, dhs, dcs = [], [], []
    for t in range(steps):
        gi, gf, gg, go = (gx[:, t] + h @ w_hh.T).chunk(4, -1)
        di, df, dg, do = (dgx[:, t] + dh @ w_hh.T).chunk(4, -1)
        i, f, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
        di, df = (i * (1 - i))[:, None] * di, (f * (1 - f))[:, None] * df
        dg, do = (1 - g * g)[:, None] * dg, (o * (1 - o))[:, None] * do
        dc = df * c[:, None] + f[:, None] * dc + di * g[:, None] + i[:, None] * dg
        c = f * c + i * g
        tc = torch.tanh(c)
        dh = do * tc[:, None] + (o * (1 - tc * tc))[:, None] * dc
        h = o * tc
        hs.append(h)
        dhs.append(dh)
        dcs.append(dc)
    return torch.stack(hs, 1), torch.stack(dhs, 1), torch.stack(dcs, 1)


def _gru_tangents(layer: nn.GRU, x: Tensor, dx: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
    """As :func:`_lstm_tangents` for a GRU layer (``nn.GRU``'s equations): h and dh."""
    w_hh, b_hh = layer.weight_hh_l0, layer.bias_hh_l0
    gx = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)  # [N, W, 3H]
    dgx = dx @ layer.weight_ih_l0.T
    n, steps, k, _ = dgx.shape
    size = w_hh.shape[1]
    h = h if h is not None else x.new_zeros(n, size)
    dh = x.new_zeros(n, k, size)
    hs, dhs = [], []
    for t in range(steps):
        xr, xz, xn = gx[:, t].chunk(3, -1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, -1)
        dxr, dxz, dxn = dgx[:, t].chunk(3, -1)
        dhr, dhz, dhn = (dh @ w_hh.T).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        cand = torch.tanh(xn + r * hn)
        dr, dz = (r * (1 - r))[:, None] * (dxr + dhr), (z * (1 - z))[:, None] * (dxz + dhz)
        dcand = (1 - cand * cand)[:, None] * (dxn + dr * hn[:, None] + r[:, None] * dhn)
        dh = dz * (h - cand)[:, None] + (1 - z)[:, None] * dcand + z[:, None] * dh
        h = (1 - z) * cand + z * h
        hs.append(h)
        dhs.append(dh)
    return torch.stack(hs, 1), torch.stack(dhs, 1)


class CharLM(L.LightningModule):
    """Character-level LSTM/GRU language model (a LightningModule and a StateSource).

    Args:
        vocab: the symbol set (a :class:`Vocab` or its ``to_dict()``).
        cell: ``lstm`` or ``gru``.
        num_layers: stacked recurrent layers.
        hidden_size: units per layer (the paper's kernel size, 80–640).
        embedding_size: size of W_C's output.
        dropout_embedding, dropout, dropout_recurrent: see module docstring.
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
        if cell not in ("lstm", "gru"):
            raise ValueError(f"model.cell must be lstm or gru; got {cell!r}")
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(dict(vocab))
        self.save_hyperparameters(ignore=["vocab"], logger=False)
        self.hparams["vocab"] = self.vocab.to_dict()
        self.hparams["betas"] = list(betas)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.embedding = nn.Embedding(len(self.vocab), embedding_size)
        self.layers = nn.ModuleList(
            rnn(embedding_size if i == 0 else hidden_size, hidden_size, batch_first=True) for i in range(num_layers)
        )
        self.projection = nn.Linear(hidden_size, len(self.vocab))
        self.state_names = [
            f"layer{i + 1}.{k}" for i in range(num_layers) for k in (("c", "h") if cell == "lstm" else ("h",))
        ]
        self.state_dims = {name: hidden_size for name in self.state_names}
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._carried: dict[str, list[LayerState]] = {}
        self.skipped_steps, self._skipped_in_a_row = 0, 0

    # ------------------------------------------------------------------ the network
    def zero_state(self, batch_size: int) -> list[LayerState]:
        z = self.embedding.weight.new_zeros(1, batch_size, self.hparams.hidden_size)
        return [(z, z) if self.hparams.cell == "lstm" else z for _ in self.layers]

    def _run_layer(self, i: int, x: Tensor, state: LayerState, **cond: Any) -> tuple[Tensor, LayerState]:
        layer = self.layers[i]
        p = self.hparams.dropout_recurrent
        if self.training and p > 0:
            params = dict(layer.named_parameters())
            params["weight_hh_l0"] = F.dropout(params["weight_hh_l0"], p)
            return functional_call(layer, params, (x, state))
        return layer(x, state)

    def conditioning(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Extra inputs of every layer taken from a batch (none here; see the factorized LM)."""
        return {}

    def _cell_states(self, i: int, x: Tensor, h: Tensor, s0: LayerState, **cond: Any) -> Tensor:
        """``[B, T, H]`` the cell states of LSTM layer ``i`` (0-based) for its run ``x`` → ``h`` from ``s0``
        (``cond``: as :meth:`forward`)."""
        return lstm_cell_states(self.layers[i], x, h, s0[0][0], s0[1][0])

    def forward(
        self, inputs: Tensor, state: list[LayerState] | None = None, return_layers: bool = False, **cond: Any
    ) -> tuple[Tensor, list[LayerState], list[tuple[Tensor, Tensor, LayerState]]]:
        """Run the LM.

        Args:
            inputs: ``[B, T]`` symbol ids.
            state: per layer, the state to start from (``None``: zeros).
            return_layers: also return each layer's ``(input [B,T,I], output [B,T,H], initial state)``.
            cond: passed to every layer (:meth:`conditioning`).
        Returns:
            logits ``[B, T, V]`` for the next symbol, the final state per layer, and the
            per-layer tuples (empty unless ``return_layers``).
        """
        x = F.dropout(self.embedding(inputs), self.hparams.dropout_embedding, self.training)
        return self.run_embedded(x, state, return_layers, **cond)

    def run_embedded(
        self, x: Tensor, state: list[LayerState] | None = None, return_layers: bool = False, **cond: Any
    ) -> tuple[Tensor, list[LayerState], list[tuple[Tensor, Tensor, LayerState]]]:
        """:meth:`forward` from the embedded inputs ``x`` ``[B, T, E]`` on."""
        state = state if state is not None else self.zero_state(x.shape[0])
        final, layers = [], []
        for i in range(len(self.layers)):
            out, s = self._run_layer(i, x, state[i], **cond)
            if return_layers:
                layers.append((x, out, state[i]))
            final.append(s)
            x = F.dropout(out, self.hparams.dropout, self.training)
        return self.projection(x), final, layers

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
            out = self._named_states(layers, **cond)
        finally:
            self.train(was_training)
        return StateBatch(out, batch["inputs"], batch["mask"], batch["history"], next_logits=logits)

    def _named_states(self, layers: list[tuple[Tensor, Tensor, LayerState]], **cond: Any) -> dict[str, Tensor]:
        """``layer{l}.c`` (LSTM) and ``layer{l}.h`` ``[B, T, H]`` from :meth:`forward`'s per-layer tuples."""
        out: dict[str, Tensor] = {}
        for i, (x, h, s0) in enumerate(layers, start=1):
            if self.hparams.cell == "lstm":
                out[f"layer{i}.c"] = self._cell_states(i - 1, x, h, s0, **cond)
            out[f"layer{i}.h"] = h
        return out

    # ------------------------------------------------------------- gradient source
    def embed(self, inputs: Tensor) -> Tensor:
        """``[B, T, E]`` the input embeddings of symbol ids ``[B, T]`` (W_C, no dropout)."""
        return self.embedding(inputs)

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
        _, _, layers = self.run_embedded(emb, state, return_layers=True)
        return self._named_states(layers)

    @torch.no_grad()
    def input_jacobians(self, window: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
        """Forward-mode Jacobians of every state w.r.t. the first input of each row of ``window``.

        Args:
            window: ``[N, W]`` symbol ids; row n's state at its step δ is compared with its input at step 0.
            context: ``[N, Tc]`` symbols run before the window (the state in context), or None.
        Returns:
            name → ``[N, W, H, E]``: entry ``[n, δ]`` is ``∂s_{p+δ} / ∂e_p`` (p: the window's first step),
            exact, for every layer and state at once: E tangents propagate through the cell equations
            (O(E) per step, where reverse mode costs O(H) per state). Eval-mode semantics (no dropout).
        """
        state = self(context)[1] if context is not None and context.shape[1] > 0 else None
        x = self.embedding(window)  # [N, W, E]
        n, w, e = x.shape
        dx = x.new_zeros(n, w, e, e)  # [N, W, K, I]: tangent k is the unit vector e_k on the first input
        dx[:, 0] = torch.eye(e)
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            s0 = state[i] if state is not None else None
            if self.hparams.cell == "lstm":
                h0, c0 = (s0[0][0], s0[1][0]) if s0 is not None else (None, None)
                x, dx, dc = _lstm_tangents(layer, x, dx, h0, c0)
                out[f"layer{i + 1}.c"] = dc.transpose(-1, -2)
            else:
                x, dx = _gru_tangents(layer, x, dx, s0[0] if s0 is not None else None)
            out[f"layer{i + 1}.h"] = dx.transpose(-1, -2)
        return out

    def kernel_params(self, name: str) -> int:
        """Parameters of the kernel (W_ih, W_hh, biases) behind a state, plus W_C for layer 1."""
        layer = int(name.split(".")[0].removeprefix("layer"))
        n = sum(p.numel() for p in self.layers[layer - 1].parameters())
        return n + (self.embedding.weight.numel() if layer == 1 else 0)

    # --------------------------------------------------------------------- training
    def _token_losses(self, batch: dict[str, Any], key: str) -> Tensor:
        """Cross-entropy in nats of every real position ``[N]``; carries the state under ``key``."""
        logits, final, _ = self(batch["inputs"], self._start_state(batch, key), **self.conditioning(batch))
        self._carry(key, final)
        losses = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
        return losses[batch["mask"].flatten()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self._token_losses(batch, "train").mean()
        why = divergence(loss, len(self.vocab))
        if why or not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item():.4g} at step {self.global_step}{why or ''}: "
                "lower model.lr, set trainer.gradient_clip_val, or resume from the last good checkpoint (ckpt_path=...)"
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bpc", loss * LOG2E)
        self.log("train/skipped_steps", float(self.skipped_steps))
        return loss

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
        loss = metric.compute()
        metric.reset()
        self.log_dict(
            {f"{stage}/loss": loss, f"{stage}/bpc": loss * LOG2E, f"{stage}/ppl": loss.exp()},
            prog_bar=True,
            sync_dist=False,
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
