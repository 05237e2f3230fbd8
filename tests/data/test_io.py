"""Atomic writes: whole files only, with the permissions of a plainly written file."""

import os

from memsig.data.corpora import lines_of
from memsig.data.io import atomic_write_bytes, iter_lines, read_text


def test_atomic_write_replaces_the_file_and_keeps_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    target = tmp_path / "sub" / "report.html"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777  # not mkstemp's 0o600
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_streamed_lines_are_those_of_the_whole_text(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("one\r\ntwo\rthree\n\n  four \x85five\u2028six\x0cseven\n\ufeffeight".encode())
    assert list(iter_lines(path)) == lines_of(read_text(path))
