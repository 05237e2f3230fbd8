"""Reading corpus files with clear errors, and fetching public corpora with a checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
BINARY_SNIFF = 8192  # bytes read for NULs, which text (other than UTF-16) never has
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class CorpusError(ValueError):
    """A corpus file is missing, empty, unreadable or malformed. The message names it."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_text(path: str | Path, what: str = "corpus file") -> str:
    """The UTF-8 text of ``path``; a :class:`CorpusError` naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(
            f"{what} {path} does not exist. Check the data path (MEMSIG_DATA_DIR or the "
            "data.* settings) or let the corpus download it (data.corpus.url)."
        )
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a directory; expected a text file")
    raw = path.read_bytes()
    if not raw.strip():
        raise CorpusError(f"{what} {path} is empty; point the config at a file with text in it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        converted = path.with_suffix(".utf8" + path.suffix)
        if raw.startswith(UTF16_BOMS):
            raise CorpusError(
                f"{what} {path} is UTF-16 text, not UTF-8. Convert it first, e.g. "
                f"`iconv -f utf-16 -t utf-8 {path} > {converted}`."
            ) from None
        if b"\0" in raw[:BINARY_SNIFF]:
            raise CorpusError(
                f"{what} {path} looks binary, not text (NUL bytes near its start: {raw[:16]!r}). "
                "Use a plain-text file instead (data=text: data.corpus.path=...)."
            ) from None
        line = raw[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"{what} {path} is not valid UTF-8 (byte {err.start}, line {line}: "
            f"{raw[max(0, err.start - 10) : err.start + 10]!r}). Convert it first, e.g. "
            f"`iconv -f latin1 -t utf-8 {path} > {converted}`."
        ) from None


def iter_lines(path: str | Path, what: str = "corpus file") -> Iterator[str]:
    """The non-blank lines of the UTF-8 text file ``path``, stripped, read as a stream: the lines of
    :func:`read_text` split as ``str.splitlines`` does, and its errors for a file that is not text."""
    path = Path(path)
    if not path.is_file():
        read_text(path, what)  # raises the error that names the problem
    found = False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                for part in line.splitlines():
                    if stripped := part.strip():
                        found = True
                        yield stripped
    except UnicodeDecodeError:
        read_text(path, what)
        raise
    if not found:
        read_text(path, what)  # an empty file is an error


def file_hashes(paths: list[Path]) -> dict[str, str]:
    """``{file name: sha256}`` of ``paths`` (a cache key of what they hold)."""
    return {p.name: sha256_of(p) for p in paths}


def matched_lines(path: str | Path, pattern: re.Pattern[str], what: str, expected: str) -> list[re.Match[str]]:
    """The match of ``pattern`` on every non-blank (stripped) line of the text file ``path``; a
    :class:`CorpusError` naming the file, the line and the ``expected`` form on a line that does
    not match."""
    out = []
    for i, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        m = pattern.match(line.strip())
        if not m:
            raise CorpusError(f"{path} line {i}: expected {expected}, got {line.strip()[:80]!r}")
        out.append(m)
    return out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never half-written); the file
    gets the permissions of a plainly written one (``mkstemp`` alone would leave it owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; renamed to ``path`` when the block ends without an
    error, removed when it raises (``path`` is never half-written). When another process created
    ``path`` meanwhile, its folder is kept and this one removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is owner-only
    try:
        os.replace(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not path.is_dir():
            raise


def ensure_file(path: str | Path, url: str | None = None, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Return ``path``, downloading it from ``url`` first when it is missing.

    The download is verified against ``sha256`` (when given) before it is moved into
    place, so a broken transfer never leaves a corrupt corpus behind. Without a URL,
    or without a network, a :class:`CorpusError` says where the file was expected.
    """
    path = Path(path)
    if path.exists():
        return path
    if not url:
        raise CorpusError(f"corpus file {path} does not exist and no download URL is configured")
    log.info("downloading %s -> %s", url, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read()
    except OSError as err:
        raise CorpusError(
            f"corpus file {path} is missing and downloading it from {url} failed ({err}). "
            "Download it by hand to that path, or set MEMSIG_DATA_DIR to a folder that has it."
        ) from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise CorpusError(f"download of {url} has sha256 {got}, expected {sha256}; not saved to {path}")
    atomic_write_bytes(path, data)
    return path
