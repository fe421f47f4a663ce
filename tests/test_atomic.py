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
