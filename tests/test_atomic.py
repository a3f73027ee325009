"""The one temp-then-rename (bapps_build.files.atomic_path and what is built on it): a write
that fails leaves the old file as it was and no temp file behind."""
import os

import pytest

from bapps_build import files as files_module
from bapps_build.files import AtomicFile, atomic_path, write_atomic, write_json_atomic


class _Boom(Exception):
    pass


def test_a_failed_piecewise_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "manifest.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(_Boom):
        with AtomicFile(target, durable=True) as f:
            f.write(b"new, half")
            raise _Boom
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["manifest.jsonl"]


def test_a_writer_that_fails_on_the_temp_name_keeps_the_old_file(tmp_path):
    target = tmp_path / "g.pt"
    target.write_bytes(b"old")
    with pytest.raises(_Boom):
        with atomic_path(target, pid_in_name=False) as tmp:
            assert tmp.name == ".g.pt.partial" and tmp.parent == tmp_path
            tmp.write_bytes(b"half a checkpoint")
            raise _Boom
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["g.pt"]


def test_a_failed_rename_leaves_no_temp_file(tmp_path):
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a non-empty folder: os.replace cannot put a file there
    with pytest.raises(OSError):
        write_atomic(target, b"data", durable=True)
    assert sorted(os.listdir(tmp_path)) == ["taken"] and os.listdir(target) == ["inside"]


def test_a_failed_close_fails_the_file(tmp_path, monkeypatch):
    target = tmp_path / "part.jsonl"
    target.write_bytes(b"old")
    real_close = os.close

    class _Os:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def close(fd):
            real_close(fd)
            raise OSError(5, "I/O error on close")

    monkeypatch.setattr(files_module, "os", _Os())
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["part.jsonl"]


def test_a_complete_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "status.json"
    target.write_text("{}\n")
    write_json_atomic(target, {"state": "done", "steps": 3})
    assert target.read_text() == '{\n  "state": "done",\n  "steps": 3\n}\n'
    with atomic_path(tmp_path / "blob", durable=True) as tmp:
        tmp.write_bytes(b"x" * 10)
    assert (tmp_path / "blob").read_bytes() == b"x" * 10
    assert sorted(os.listdir(tmp_path)) == ["blob", "status.json"]
