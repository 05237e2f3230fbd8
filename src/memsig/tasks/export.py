"""What ``export.py`` runs (see ``conf/export.yaml``).

``what=signature``: a probe's ``signature.npz`` as ``signature.csv`` (long table) and
``signature.nc`` (labelled arrays), see :mod:`memsig.export.signature_table`.
``what=lstmvis``: a checkpoint's states over a data split (or a text file) as an LSTMVis
project folder ``lstmvis/``, see :mod:`memsig.export.lstmvis`. Both land in ``out`` (the
Hydra run dir unless set).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from memsig.data.io import read_text
from memsig.data.text import SPLITS
from memsig.export.lstmvis import encode_text, write_lstmvis
from memsig.export.signature_table import save_signature_nc, write_signature_csv
from memsig.models.checkpoint import data_config_for, load_model, resolve_checkpoint
from memsig.probe.signature import Signature
from memsig.tasks.probe import refuse_vocab
from memsig.tasks.rundir import claim_run_dir
from memsig.tasks.utils import write_json

log = logging.getLogger(__name__)
WHAT = ("lstmvis", "signature")


def export_signature(ref: str | None, out: Path) -> list[Path]:
    """``signature.csv`` and ``signature.nc`` in ``out`` of the signature at ``ref``
    (a ``signature.npz`` or the probe run dir holding one)."""
    if not ref:
        raise ValueError("export what=signature needs signature=<a signature.npz or the probe run dir with one>")
    path = Path(ref).expanduser()
    sig = Signature.load(path / "signature.npz" if path.is_dir() else path)
    return [write_signature_csv(sig, out / "signature.csv"), save_signature_nc(sig, out / "signature.nc")]


def lstmvis_text(cfg: DictConfig, model: Any, ckpt: Path) -> tuple[Tensor, dict[str, Any] | None, str]:
    """``[N]`` ids to export, the extra batch entries the model needs, and what the text is.

    The text is ``cfg.text_file`` if set, else split ``cfg.split`` of ``cfg.data`` (default:
    the data config of the checkpoint's train run). A factorized LM gets the corpus λ of
    the training split in every batch (as ``data.lambdas.scope=domain`` gives it).
    """
    if cfg.get("text_file"):
        return encode_text(model.vocab, read_text(cfg.text_file, what="text file")), None, str(cfg.text_file)
    if cfg.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {cfg.split!r} (or set text_file=<file>)")
    data_cfg = data_config_for(cfg.get("data"), ckpt)
    with open_dict(cfg):
        cfg.data = data_cfg  # resolved against this run's paths
    dm = hydra.utils.instantiate(cfg.data, vocab=model.vocab)
    extra = {"lam": dm.lambda_counts("train").total()} if dm.lambdas is not None else None
    return dm.ids(cfg.split), extra, f"the {cfg.split} split of {dm.corpus.name}"


def export_lstmvis(cfg: DictConfig, out: Path) -> Path:
    """The LSTMVis folder ``out/lstmvis`` of ``cfg.ckpt``'s states over the chosen text."""
    if not cfg.get("ckpt"):
        raise ValueError("export what=lstmvis needs ckpt=<a train checkpoint (.ckpt) or a train run dir>")
    ckpt = resolve_checkpoint(str(cfg.ckpt))
    refuse_vocab(cfg, ckpt)
    model = load_model(ckpt)
    ids, extra, what = lstmvis_text(cfg, model, ckpt)
    states = OmegaConf.to_container(cfg.states) if cfg.get("states") else None
    log.info("exporting %s of %s over %d symbols of %s", states or model.state_names, ckpt, len(ids), what)
    return write_lstmvis(
        model,
        ids,
        out / "lstmvis",
        states=states,
        seq_len=int(cfg.seq_len),
        extra=extra,
        dtype=cfg.get("dtype", "float32"),
        compression=cfg.get("compression"),
        name=f"memsig: {ckpt.name} over {what}",
        description=f"{type(model).__name__} {ckpt} over {what} ({len(ids)} symbols)",
    )


def export(cfg: DictConfig) -> dict[str, Any]:
    """Run the export described by ``cfg``; returns ``{"what", "written": [paths]}``."""
    if cfg.what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(WHAT)}; got {cfg.what!r}")
    claim_run_dir(cfg, "export.json")
    out = Path(cfg.out)
    written = export_signature(cfg.get("signature"), out) if cfg.what == "signature" else [export_lstmvis(cfg, out)]
    print("written:\n" + "\n".join(f"  {p}" for p in written), flush=True)
    result = {"what": cfg.what, "written": [str(p) for p in written]}
    write_json(Path(cfg.paths.output_dir) / "export.json", result)
    return result
