"""Atomic outputs written by libraries that want a path (netCDF, HDF5, a whole folder).

:func:`staged` hands out a temporary path beside the target; the target appears (or is
replaced) only when everything was written, so a crash never leaves half an export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path``'s content into, renamed onto ``path`` when the block succeeds.

    Args:
        path: the file (or, with ``directory``, the folder) to write.
        directory: yield an empty folder to fill; a folder already at ``path`` is replaced
            as a whole.
    Yields:
        a path on the same file system as ``path`` (a file name to create, or an empty
        folder). Whatever the block leaves there is removed if it raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        target = scratch / path.name
        if directory:
            target.mkdir()
        yield target
        if directory and path.exists():
            os.replace(path, scratch / "replaced")  # a folder cannot be renamed onto a non-empty one
        os.replace(target, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
