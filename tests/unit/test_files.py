"""Atomic writes: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from safemix.files import write_dir_atomic, write_text_atomic


def test_an_atomic_file_gets_the_umask_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_dir_atomic(tmp_path / "d", lambda tmp: (tmp / "f").write_text("y"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        from safemix.files import atomic_writer

        with atomic_writer(target) as handle:
            handle.write("new")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["a.txt"]
