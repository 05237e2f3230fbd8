"""A study: several models' signatures, collected once and rendered as static files
(:func:`memsig.report.static.write_static`) or as the interactive page
(:func:`memsig.report.build.study_page`).

A :class:`Study` is built from a multirun (:meth:`Study.from_sweep`: every job's ``metrics.json``
and ``signatures/*.npz``, keeping the best job by dev loss over ``select_over``, e.g. the best
dropout per model) or from signature files (:meth:`Study.from_signatures`). It holds the models,
their named signatures, the state compared of each, the difference pairs and the pairwise
distances (measured once, on the lags both signatures of a pair have), and gives both renderers
the same tables and figure specifications (:mod:`memsig.plots.specs`).

A multirun's model is named by the values of its ``label`` overrides (default: every override that
differs between the jobs, but ``select_over``), e.g. ``gru-320``; extra signatures of a job
(variants, the n-gram's count table) are named ``<model> [<signature>]``. A signature file is named
by ``names`` (default: its run dir's name, or the file's stem). ``python report.py <sweep dir>
--static`` and ``python report.py a.npz b.npz`` render one; the Hydra callback
:class:`~memsig.tasks.hydra_callbacks.StudyReport` does when a multirun ends.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from memsig.analysis.distance import pairwise_distances, shared_lags
from memsig.plots import specs
from memsig.probe.signature import Signature
from memsig.report.sources import EXPECTED, METRICS, ReportError, train_run_of

log = logging.getLogger(__name__)

REPORT_LAGS = (1, 2, 4, 8, 16)  # marginal recall shown in the recall table
# shown in the one-line model summary (a Hugging Face LM's come from its model.config)
MODEL_KEYS = (
    "model_type",
    "cell",
    "num_layers",
    "num_hidden_layers",
    "n_layer",
    "hidden_size",
    "n_embd",
    "embedding_size",
    "order",
)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``key -> value`` of Hydra overrides (``+``/``~`` prefixes dropped)."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def summarize(
    sweep_dir: str | Path, metric: str = "val/loss", select_over: tuple[str, ...] = ("model.dropout",)
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of all jobs of a multirun (their ``metrics.json``) and the best row per group: for every
    combination of the other swept options, the job with the lowest ``metric`` over ``select_over``."""
    rows, swept = [], set()
    for f in sorted(Path(sweep_dir).glob(f"*/{METRICS}"), key=lambda p: (len(p.parent.name), p.parent.name)):
        result = json.loads(f.read_text())
        overrides = parse_overrides(result["overrides"])
        swept.update(overrides)
        row: dict[str, Any] = {"job": f.parent.name, **overrides}
        row.update({k: round(v, 5) for k, v in sorted(result["metrics"].items())})
        row["best_checkpoint"] = result.get("best_checkpoint")
        rows.append(row)
    group_keys = [k for k in sorted(swept) if k not in select_over]
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in group_keys)
        score = r.get(metric, float("inf"))  # a job that never validated loses to any that did
        if key not in best or score < best[key].get(metric, float("inf")):
            best[key] = r
    return rows, list(best.values())


def describe_model(meta: dict[str, Any]) -> str:
    """One line: the model class and its main sizes, e.g. ``CharLM (cell lstm, num_layers 2, hidden_size 320)``."""
    model = meta.get("model") or {}
    if isinstance(model.get("config"), dict):
        model = {**model, **model["config"]}
    sizes = ", ".join(f"{k} {model[k]}" for k in MODEL_KEYS if k in model)
    return f"{model.get('class', '?')} ({sizes})" if sizes else str(model.get("class", "?"))


def corpus_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The probed corpus's config in a signature's ``meta`` (a bare name as ``{"name": ...}``; ``{}`` if none)."""
    corpus = (meta.get("data") or {}).get("corpus")
    return corpus if isinstance(corpus, dict) else {"name": corpus} if corpus else {}


def corpus_of(meta: dict[str, Any]) -> str | None:
    """The probed corpus: its name, else its class (e.g. ``PTBCorpus``)."""
    corpus = corpus_config(meta)
    return corpus.get("name") or str(corpus.get("_target_", "")).rsplit(".", 1)[-1] or None


def recall_rows(sigs: dict[str, Signature]) -> list[dict[str, Any]]:
    """One row per (signature, probed real state): marginal recall (%) at :data:`REPORT_LAGS`."""
    return [
        {
            "signature": name,
            "state": state,
            **{
                f"δ={lag}": round(100 * float(sig.accuracy[sig.index(state), sig.lags.index(lag)]), 1)
                for lag in REPORT_LAGS
                if lag in sig.lags
            },
            "majority": round(100 * float(sig.majority_rate[0, 0]), 1),
        }
        for name, sig in sigs.items()
        for state in sig.real_states
    ]


@dataclass(frozen=True)
class StudySettings:
    """How a study names and compares its models, shared by its static files and interactive page
    (the settings of :class:`~memsig.tasks.hydra_callbacks.StudyReport` and of ``report.py``).

    title: the page title (None: ``memsig study — <sweep dir or signature names>``); label: override
    keys that name a multirun's model (None: every override that differs between jobs); select_over:
    keep a multirun's best job by dev loss over these; differences: ``(a, b)`` model-name pairs for the
    difference maps (none asked, or none of them present: the first model against each other); state:
    the state compared of every signature (None: each one's first probed state); n_boot: bootstrap
    resamples of the distance intervals.
    """

    title: str | None = None
    label: Sequence[str] | None = None
    select_over: Sequence[str] = ("model.dropout",)
    differences: Sequence[Sequence[str]] = ()
    state: str | None = None
    n_boot: int = 1000


@dataclass
class Model:
    """One model of a study: its name, run dir, metrics (empty when unknown), parameters, wall time
    and signatures (name -> Signature; ``main`` is named after the model)."""

    name: str
    run_dir: Path
    metrics: dict[str, Any]
    params: int | None
    wall_time_s: float | None
    signatures: dict[str, Signature] = field(default_factory=dict)


def _named(model: Model) -> dict[str, Signature]:
    """A model's signatures by their name in a study: ``main`` is the model's name, another ``k``
    is ``<model> [k]``."""
    return {(model.name if k == "main" else f"{model.name} [{k}]"): s for k, s in model.signatures.items()}


def _model(name: str, run_dir: Path, result: dict[str, Any], signatures: dict[str, Signature]) -> Model:
    """A model from its train run's ``metrics.json`` contents (``{}``: none known)."""
    return Model(
        name, run_dir, result.get("metrics") or {}, result.get("params"), result.get("wall_time_s"), signatures
    )


@dataclass
class Study:
    """Several models' signatures, read once, that both renderers show alike.

    Attributes:
        title: the page title.
        origin: what the models come from, one phrase (e.g. ``Multirun with <n> models``).
        paths: the sweep dir, or the signature files.
        models: the models, in order.
        signatures: every signature of the models: ``<model>`` for ``main``, ``<model> [<name>]`` for the others.
        states: signature name -> the state compared (in the side-by-side, difference maps and distances).
        pairs: ``(a, b)`` signature names of the difference maps (red = a recalls better).
        n_boot: bootstrap resamples of the distance intervals.
    """

    title: str
    origin: str
    paths: list[Path]
    models: list[Model]
    signatures: dict[str, Signature]
    states: dict[str, str]
    pairs: list[tuple[str, str]]
    n_boot: int

    @classmethod
    def of_models(
        cls, models: list[Model], settings: StudySettings, title: str, origin: str, paths: list[Path]
    ) -> Study:
        """The study of ``models``: their signatures named, the state compared and the pairs chosen as
        ``settings`` says (``title``: used when ``settings`` has none). ValueError where a signature lacks
        the state asked for."""
        sigs = {name: s for m in models for name, s in _named(m).items()}
        asked = [(a, b) for a, b in settings.differences]
        for a, b in asked:
            if a not in sigs or b not in sigs:
                log.warning("difference %s vs %s: no such signatures (have %s)", a, b, sorted(sigs))
        pairs = [(a, b) for a, b in asked if a in sigs and b in sigs]
        lacking = [name for name, sig in sigs.items() if settings.state and settings.state not in sig.real_states]
        if lacking:
            raise ValueError(f"state {settings.state!r} is not a probed state of {', '.join(lacking)}")
        names = list(sigs)
        return cls(
            settings.title or title,
            origin,
            paths,
            models,
            sigs,
            {name: settings.state or sig.real_states[0] for name, sig in sigs.items()},
            pairs or [(names[0], other) for other in names[1:]],
            settings.n_boot,
        )

    @classmethod
    def from_sweep(
        cls, sweep_dir: str | Path, settings: StudySettings | None = None, metric: str = "val/loss"
    ) -> Study:
        """The study of a multirun: per group of jobs the best by ``metric`` over ``settings.select_over``,
        in job order. :class:`~memsig.report.sources.ReportError` when no job finished or none has a signature."""
        settings = settings or StudySettings()
        sweep_dir = Path(sweep_dir)
        _, best = summarize(sweep_dir, metric, tuple(settings.select_over))
        if not best:
            raise ReportError(f"no finished jobs ({METRICS}) under {sweep_dir}: nothing to report; {EXPECTED}")
        results = {row["job"]: json.loads((sweep_dir / row["job"] / METRICS).read_text()) for row in best}
        options = {job: parse_overrides(r["overrides"]) for job, r in results.items()}
        keys = (
            list(settings.label)
            if settings.label
            else [
                k
                for k in dict.fromkeys(k for o in options.values() for k in o)
                if k not in settings.select_over and len({o.get(k) for o in options.values()}) > 1
            ]
        )  # overrides that tell jobs apart
        models = []
        for job, result in results.items():
            name = "-".join(options[job][k] for k in keys if k in options[job]) or job
            sigs = {k: Signature.load(p) for k, p in (result.get("signatures") or {}).items() if Path(p).is_file()}
            models.append(_model(name, sweep_dir / job, result, sigs))
        if not any(m.signatures for m in models):
            raise ReportError(
                f"none of the {len(models)} jobs under {sweep_dir} has a signature (signatures/*.npz listed in "
                f"its {METRICS}): train with signature.probe set; {EXPECTED}"
            )
        over = ", ".join(settings.select_over)
        origin = f"Multirun with {len(models)} models" + (
            f" (per model the best job by dev loss over {over})" if over else ""
        )
        return cls.of_models(models, settings, f"memsig study — {sweep_dir.name}", origin, [sweep_dir])

    @classmethod
    def from_signatures(
        cls, paths: Sequence[str | Path], names: Sequence[str] | None = None, settings: StudySettings | None = None
    ) -> Study:
        """The study of signature files, one model each, named by ``names`` (default: the run dir of a
        ``signature.npz``, else the file's stem); a model's metrics are its train run's when the
        checkpoint the signature probed is found. ValueError unless the names are distinct, one per file;
        :class:`~memsig.probe.signature.SignatureError` naming a file that is not a signature."""
        paths = [Path(p) for p in paths]
        names = list(names or (p.parent.name if p.name == "signature.npz" else p.stem for p in paths))
        if len(names) != len(paths) or len(set(names)) != len(names):
            raise ValueError(f"need one distinct name per signature; got {names}")
        models = []
        for name, path in zip(names, paths):
            sig = Signature.load(path)
            train = train_run_of(sig, path.parent)
            result = json.loads((train / METRICS).read_text()) if train else {}
            models.append(_model(name, train or path.parent, result, {"main": sig}))
        origin = f"{len(paths)} signature files"
        return cls.of_models(models, settings or StudySettings(), f"memsig study — {' vs '.join(names)}", origin, paths)

    @cached_property
    def distances(self) -> dict[tuple[str, str], tuple[float, float, float]]:
        """``(a, b) -> (distance, low, high)`` of every pair of signatures (their compared states), with
        the 95 % bootstrap interval; ValueError naming a pair that shares no supported cell."""
        return pairwise_distances(self.signatures, self.states, n=self.n_boot)

    def distance_rows(self) -> list[dict[str, Any]]:
        """One row per pair: distance, interval, the lags it was measured on and those left out (in one only)."""
        rows = []
        for (a, b), (d, lo, hi) in self.distances.items():
            used, left_out = shared_lags(self.signatures[a], self.signatures[b])
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "distance": round(d, 4),
                    "low": round(lo, 4),
                    "high": round(hi, 4),
                    "lags": " ".join(map(str, used)),
                    "lags_left_out": " ".join(map(str, left_out)),
                }
            )
        return rows

    def model_rows(self) -> list[dict[str, Any]]:
        """One row per model: parameters, perplexities (val, test, every ``eval/<corpus>``), wall time."""
        rows = []
        for m in self.models:
            row: dict[str, Any] = {"model": m.name, "params": m.params}
            for key in sorted(k for k in m.metrics if k.endswith("/ppl")):
                row[key.replace("/ppl", " ppl")] = round(m.metrics[key], 3)
            row["wall time (s)"] = m.wall_time_s
            rows.append(row)
        return rows

    def signature_rows(self) -> list[dict[str, Any]]:
        """One row per signature: the model probed, corpus, split, states, checkpoint digest."""
        return [
            {
                "signature": name,
                "model": describe_model(sig.meta),
                "corpus": corpus_of(sig.meta),
                "split": sig.meta.get("split"),
                "states": ", ".join(sig.real_states),
                "checkpoint sha256": (sig.meta.get("checkpoint_sha256") or "")[:16],
            }
            for name, sig in self.signatures.items()
        ]

    def recall_rows(self) -> list[dict[str, Any]]:
        """:func:`recall_rows` of every signature."""
        return recall_rows(self.signatures)

    def memory(self) -> specs.Points:
        """Each signature's memory (its compared state, summed over the lags) against the test
        perplexity of its model, where known (:func:`~memsig.plots.specs.memory_points`)."""
        ppl = {n: m.metrics["test/ppl"] for m in self.models if "test/ppl" in m.metrics for n in _named(m)}
        return specs.memory_points(self.signatures, self.states, ppl)

    def memory_rows(self) -> list[dict[str, Any]]:
        """:meth:`memory` as a table: one row per point, its interval where it has one."""
        points = self.memory()
        return [
            {
                "signature": name,
                "state": self.states[name],
                "test ppl": round(float(x), 3),
                "test bits/char": round(math.log2(float(x)), 3),
                points.ylabel: round(float(y), 3),
                **({"low": round(float(lo), 3), "high": round(float(hi), 3)} if math.isfinite(lo) else {}),
            }
            for name, x, y, lo, hi in zip(points.names, points.x, points.y, points.low, points.high)
        ]

    def curves(self) -> specs.Curves:
        """Overall recall per lag of every signature and probed state, with the majority rate."""
        return specs.recall_curves(self.signatures, real_only=True, prefixed=len(self.signatures) > 1)

    def panels(self) -> specs.Panels:
        """Each signature's recall map (its compared state), one colour scale."""
        return specs.recall_panels(self.signatures, self.states)

    def differences(self) -> list[specs.Heatmap]:
        """The difference map of each of :attr:`pairs` (first minus second, in points)."""
        sigs, states = self.signatures, self.states
        return [specs.difference(sigs[a], sigs[b], states[a], states[b], (a, b)) for a, b in self.pairs]


def add_study_arguments(ap: Any) -> None:
    """Add a study's settings (``--title``, ``--label``, ``--select-over``, ``--difference``, ``--state``,
    ``--n-boot``) to a parser or group."""
    ap.add_argument("--title", help="page title")
    ap.add_argument(
        "--label", nargs="+", help="multirun: override keys that name a model (default: the ones that differ)"
    )
    ap.add_argument(
        "--select-over", nargs="*", default=["model.dropout"], help="multirun: keep the best job over these"
    )
    ap.add_argument(
        "--difference",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="a difference map A - B (model names as in the report); default: the first model against each other",
    )
    ap.add_argument("--state", help="the state compared of every signature (default: each one's first probed state)")
    ap.add_argument(
        "--n-boot",
        type=int,
        default=StudySettings.n_boot,
        help="bootstrap resamples of the distance intervals (default: %(default)s)",
    )


def settings_of(args: Any) -> StudySettings:
    """The :class:`StudySettings` of arguments parsed with :func:`add_study_arguments`."""
    return StudySettings(args.title, args.label, args.select_over, args.difference, args.state, args.n_boot)
