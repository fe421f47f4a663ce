"""Result files appear whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acmil.atomic import atomic_path, write_csv, write_json


def test_json_and_csv_round_trip_with_numpy_values(tmp_path):
    write_json(tmp_path / "sub" / "m.json", {"auc": np.float32(0.5), "ids": np.arange(2), "p": tmp_path})
    assert json.loads((tmp_path / "sub" / "m.json").read_text()) == {"auc": 0.5, "ids": [0, 1], "p": str(tmp_path)}
    write_csv(tmp_path / "p.csv", [{"slide_id": "a", "prob": 0.1, "extra": 1}], ["slide_id", "prob"])
    assert (tmp_path / "p.csv").read_text() == "slide_id,prob\na,0.1\n"


def test_failure_leaves_neither_final_nor_temporary_file(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("renderer crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    from acmil.atomic import AtomicWriteError
    from tests.helpers.disk_full import fill, small_tmpfs

    with small_tmpfs(tmp_path / "mnt", "64k") as disk:
        target = disk / "metrics.json"
        write_json(target, {"auc": 0.9})
        fill(disk)
        with pytest.raises(AtomicWriteError) as info:
            write_json(target, {"auc": 0.5, "pad": "x" * 100_000})
        assert info.value.errno == 28 and str(target) in str(info.value) and "disk full" in str(info.value)
        assert json.loads(target.read_text()) == {"auc": 0.9}
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "metrics.json"]  # no temporary left
        with pytest.raises(OSError, match="p.csv: disk full"):
            write_csv(disk / "p.csv", [{"slide_id": "a" * 100_000}])
        assert not (disk / "p.csv").exists()


def test_publish_renames_a_finished_file_and_names_the_target_when_it_cannot(tmp_path):
    from acmil.atomic import AtomicWriteError, publish, temp_path

    target = tmp_path / "upload.svs"
    tmp = temp_path(target)
    assert tmp.parent == tmp_path and tmp.name.startswith(".upload.svs.") and tmp.name.endswith(".partial")
    tmp.write_bytes(b"whole")
    assert publish(tmp, target) == target
    assert target.read_bytes() == b"whole" and not tmp.exists()
    tmp.write_bytes(b"again")
    missing = tmp_path / "gone" / "upload.svs"  # its folder does not exist: the rename fails
    with pytest.raises(AtomicWriteError, match=f"cannot write {missing}"):
        publish(tmp, missing)
    assert tmp.read_bytes() == b"again"  # left for the caller to remove
