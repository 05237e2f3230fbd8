"""Utterance manifests: one line per utterance, as JSON Lines or TSV.

``*.jsonl``: one JSON object per line with the keys ``id``, ``audio``, ``text``,
``speaker`` and ``duration`` (seconds). ``*.tsv``: a header line
``id<TAB>audio<TAB>text<TAB>speaker<TAB>duration`` then one utterance per line (fields
may not hold tabs or newlines). A relative ``audio`` path is relative to the manifest's
folder; :func:`read_manifest` returns it joined to that folder, and :func:`write_manifest`
writes paths below the manifest's folder relative to it, so a corpus folder can move.
An empty ``.jsonl`` file is a split without utterances.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from memsig.data.io import CorpusError, atomic_write_bytes, read_text

FIELDS = ("id", "audio", "text", "speaker", "duration")


@dataclass(frozen=True)
class Utterance:
    """One recorded utterance.

    Attributes:
        id: unique within its corpus.
        audio: path of the audio file.
        text: the raw transcript (the :class:`~memsig.vocab.Vocab` normalises it).
        speaker: speaker (or voice) label.
        duration: length of the audio in seconds.
    """

    id: str
    audio: str
    text: str
    speaker: str
    duration: float


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".tsv"):
        raise CorpusError(f"manifest {path} has suffix {path.suffix!r}; name it *.jsonl (JSON Lines) or *.tsv")
    return suffix[1:]


def _utterance(record: dict, folder: Path, where: str) -> Utterance:
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise CorpusError(f"{where}: missing field(s) {', '.join(missing)}; every line needs {', '.join(FIELDS)}")
    try:
        duration = float(record["duration"])
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: duration {record['duration']!r} is not a number of seconds") from None
    return Utterance(
        str(record["id"]), str(folder / str(record["audio"])), str(record["text"]), str(record["speaker"]), duration
    )


def read_manifest(path: str | Path) -> list[Utterance]:
    """The utterances of a ``.jsonl`` or ``.tsv`` manifest, in file order (see module docstring).

    Raises:
        CorpusError: the file is missing, empty or malformed, or repeats an id (the
            message names the file and line).
    """
    path = Path(path)
    kind = _format(path)
    if path.is_file() and path.stat().st_size == 0:
        return []  # an empty JSON Lines manifest: a split without utterances
    lines = read_text(path, "manifest").splitlines()
    folder = path.parent
    utts: list[Utterance] = []
    if kind == "tsv":
        header = lines[0].rstrip("\r").split("\t")
        if tuple(header) != FIELDS:
            raise CorpusError(f"{path} line 1: expected the TSV header {'<TAB>'.join(FIELDS)}, got {lines[0][:80]!r}")
    for i, line in enumerate(lines[1:] if kind == "tsv" else lines, 2 if kind == "tsv" else 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        if kind == "tsv":
            values = line.rstrip("\r").split("\t")
            if len(values) != len(FIELDS):
                raise CorpusError(f"{where}: expected {len(FIELDS)} tab-separated fields, got {len(values)}")
            record = dict(zip(FIELDS, values, strict=True))
        else:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{where} is not valid JSON ({err.msg}); fix or remove the line") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
        utts.append(_utterance(record, folder, where))
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise CorpusError(f"manifest {path} lists utterance id {u.id!r} more than once; ids must be unique")
        seen.add(u.id)
    return utts


def _relative(audio: str, folder: Path) -> str:
    """``audio`` relative to ``folder`` (absolute) when it lies below it, else absolute."""
    p = Path(audio).absolute()
    try:
        return p.relative_to(folder).as_posix()
    except ValueError:
        return str(p)


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> None:
    """Write ``utts`` to a ``.jsonl`` or ``.tsv`` manifest atomically (see module docstring)."""
    path = Path(path)
    kind = _format(path)
    folder = path.parent.absolute()
    rows = []
    for u in utts:
        record = {**asdict(u), "audio": _relative(u.audio, folder), "duration": float(u.duration)}
        if kind == "jsonl":
            rows.append(json.dumps(record, ensure_ascii=False))
            continue
        bad = [k for k in FIELDS if any(c in str(record[k]) for c in "\t\r\n")]
        if bad:
            raise CorpusError(
                f"utterance {u.id!r}: field(s) {', '.join(bad)} hold a tab or newline, which a TSV "
                f"manifest cannot store; write {path.with_suffix('.jsonl').name} instead"
            )
        rows.append("\t".join(repr(record[k]) if k == "duration" else str(record[k]) for k in FIELDS))
    header = ["\t".join(FIELDS)] if kind == "tsv" else []
    atomic_write_bytes(path, "".join(line + "\n" for line in header + rows).encode("utf-8"))
