"""Atomic writes: whole files only, with the permissions of a plainly written file."""

import os

from memsig.data.io import atomic_write_bytes


def test_atomic_write_replaces_the_file_and_keeps_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    target = tmp_path / "sub" / "report.html"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_mode & 0o777 == os.stat(plain).st_mode & 0o777  # not mkstemp's 0o600
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary file left
