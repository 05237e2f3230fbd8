"""Per-basis memory signatures of the factorized-kernel LM (reference fig. 6).

For a trained :class:`~memsig.models.factorized.FactorizedCharLM`:

- ``base``: the signature of the base kernel alone, ``W_0`` (normalised λ = 0: with the
  default ``standardize`` normalisation, the kernel of average training text);
- ``main`` (written by the train task): the full model, λ from each batch;
- ``basis <ab>``: "base + one basis", ``W_0 + λ_k u_k v_kᵀ``, at the stated ``λ_k``:
  the mean normalised λ_k over the training segments whose λ context holds the bigram
  ``ab`` at least once (:func:`basis_strengths`) — the value the basis typically works at
  when its bigram is there. A basis whose bigram never occurs in training has no value
  (it never trained).

Those run with the configured probe. The **summary** ranks every trained basis by how far
its signature departs from the base kernel's (:func:`~memsig.analysis.distance.signature_distance`
over lags and symbols), all at one push (λ_k = 2: the bigram two standard deviations more
frequent than in average text), with the quick probe on a few batches (~1k MLP probe runs
are not practical): high = the basis carries its own memory, ~0 = a pruning candidate.

Outputs (``signatures/`` of the run): ``base.npz``, ``basis_<ab>.npz``, ``bases/figure6.png``
(base, full model and the chosen bases side by side on one scale), ``bases/departures.csv``
and ``bases/departures.png``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from memsig.analysis.distance import signature_distance
from memsig.data.io import atomic_write_bytes
from memsig.data.text import TextDataModule
from memsig.models.factorized import FactorizedCharLM, FixedLambda
from memsig.probe.quick import quick_signature
from memsig.probe.signature import Signature

log = logging.getLogger(__name__)


@torch.no_grad()
def basis_strengths(model: FactorizedCharLM, datamodule: TextDataModule) -> tuple[np.ndarray, np.ndarray]:
    """``([K], [K])``: per basis, the mean normalised λ_k over the training segments whose λ
    context holds its statistic (NaN where none does), and how many such segments there are."""
    counts = datamodule.lambda_counts("train")
    total = torch.zeros(model.num_bases, dtype=torch.float64)
    present = torch.zeros(model.num_bases, dtype=torch.float64)
    for a in range(0, len(counts), 2048):
        index = torch.arange(a, min(a + 2048, len(counts)))
        raw = counts.counts(index)
        f = counts.normalise(raw)
        held = raw > 0
        total += (model.normalize(f.to(model.lambda_mean)).cpu() * held).sum(0).double()
        present += held.sum(0).double()
    mean = torch.where(present > 0, total / present.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
    return mean.numpy(), present.numpy()


def basis_source(model: FactorizedCharLM, k: int | None, strength: float = 0.0) -> FixedLambda:
    """The base kernel (``k`` None) or base + basis ``k`` at normalised λ_k = ``strength``."""
    z = torch.zeros(model.num_bases)
    if k is not None:
        z[k] = strength
    return FixedLambda(model, z)


def departures(
    model: FactorizedCharLM,
    datamodule: TextDataModule,
    strengths: np.ndarray,
    present: np.ndarray,
    state: str,
    lags: Sequence[int],
    strength: float | None = 2.0,
    batches: int = 4,
    limit: int | None = None,
    progress: bool = True,
    **quick: Any,
) -> list[dict[str, Any]]:
    """Quick signature of base + each trained basis against the base kernel's, on at most
    ``batches`` batches of each split; rows sorted by distance (largest first).

    Args:
        strengths, present: :func:`basis_strengths`.
        strength: the normalised λ_k every basis is put at (default 2: its bigram two standard
            deviations more frequent than in average training text), so bases are compared at
            the same push; None: each at its ``strengths`` value (where its bigram occurs).
        limit: only the ``limit`` bases present in the most training segments (None: all trained).
        quick: more :func:`~memsig.probe.quick.quick_signature` options (``features``…).
    """
    options = {
        "states": [state],
        "lags": list(lags),
        "max_train_batches": batches,
        "max_eval_batches": batches,
        "calibrate": False,
        **quick,
    }
    base = quick_signature(basis_source(model, None), datamodule, **options)
    names = model.basis_names()
    trained = [k for k in np.argsort(-present, kind="stable") if np.isfinite(strengths[k])][:limit]
    rows = []
    for k in tqdm(trained, desc="bases", disable=not progress):
        at = float(strengths[k]) if strength is None else strength
        sig = quick_signature(basis_source(model, k, at), datamodule, **options)
        rows.append(
            {
                "basis": names[k],
                "lambda": at,
                "segments": int(present[k]),
                "distance": signature_distance(sig, base, state),
                "accuracy_lag1": float(sig.accuracy[0, 0]),
                "base_accuracy_lag1": float(base.accuracy[0, 0]),
            }
        )
    return sorted(rows, key=lambda r: -r["distance"])


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["basis"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_basis_signatures(
    model: FactorizedCharLM,
    datamodule: TextDataModule,
    full: Signature | None,
    names: Sequence[str],
    out: Path,
    probe: Any,
    summary: dict[str, Any] | None = None,
    formats: Sequence[str] = ("png", "svg"),
) -> dict[str, str]:
    """Signatures of the base kernel and of base + each basis in ``names`` (``"xt"``; ``␣`` or
    ``" "`` for space), the figure-6 layout with ``full`` (the model with its data's λ), and,
    with ``summary`` (:func:`departures` options: ``batches``, ``limit``, ``features``…), the
    ranked departures of the trained bases. ``probe(source) -> Signature`` runs the configured probe.

    Returns name -> written file (``base``, ``basis_<ab>`` signatures; ``figure6``; ``departures``).
    """
    from memsig.plots import departure_bars, save_figure, side_by_side

    strengths, present = basis_strengths(model, datamodule)
    labels = model.basis_names()
    sigs: dict[str, Signature] = {"base kernel": probe(basis_source(model, None))}
    written = {"base": str(sigs["base kernel"].save(out / "base.npz"))}
    if full is not None:
        sigs["full model"] = full
    for name in names:
        label = name.replace(" ", "\u2423")
        if label not in labels:
            raise ValueError(
                f"basis {name!r} is not one of the model's {model.hparams.statistic}s (e.g. {labels[40]!r})"
            )
        k = labels.index(label)
        if not np.isfinite(strengths[k]):
            log.warning(
                "basis %r: its bigram never occurs in the training data (the basis never trained); skipped", name
            )
            continue
        sig = probe(basis_source(model, k, float(strengths[k])))
        sig.meta["basis"] = {"name": label, "lambda": float(strengths[k]), "segments": int(present[k])}
        sigs[f"basis '{label}' (λ={strengths[k]:.2f})"] = sig
        written[f"basis_{name}"] = str(sig.save(out / f"basis_{name.replace(' ', '_')}.npz"))
    state = sigs["base kernel"].real_states[0]
    written["figure6"] = str(save_figure(side_by_side(sigs, state), out / "bases" / "figure6", tuple(formats))[0])
    if summary is not None:
        opts = dict(summary)
        rows = departures(model, datamodule, strengths, present, state, sigs["base kernel"].lags, **opts)
        _write_csv(rows, out / "bases" / "departures.csv")
        written["departures"] = str(out / "bases" / "departures.csv")
        save_figure(departure_bars(rows), out / "bases" / "departures", tuple(formats))
        log.info(
            "bases departing most from the base kernel: %s",
            ", ".join(f"{r['basis']} {r['distance']:.3f}" for r in rows[:10]),
        )
    return written
