"""The demo's report.md / report.html are written atomically: a full disk keeps the previous report whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmil.analysis.report import write_report


def _summary(note: str) -> dict:
    """A minimal demo summary (the keys build_blocks reads); ``note`` lands in the page."""
    return {
        "size": {"n_slides": 2, "width": 1, "height": 1},
        "n_tiles": 1,
        "seed": 0,
        "encoder": "e",
        "encoder_weights_note": note,
        "splits": {"train": [], "val": [], "test": []},
        "metrics": {},
        "localisation": {"acmil": {"mean_auc": None, "pooled_auc": None, "min_auc": None, "n_slides": 0}},
        "attention_stats": {},
        "heatmap_slides": [],
        "umap": {"n_points": 0, "n_tiles_total": 0},
        "serve_command": "acmil serve",
        "stage_seconds": {},
    }


def test_a_full_disk_keeps_the_previous_report(tmp_path: Path) -> None:
    from acmil.atomic import AtomicWriteError
    from tests.helpers.disk_full import fill, small_tmpfs

    with small_tmpfs(tmp_path / "mnt", "256k") as disk:
        md, page = write_report(disk, _summary("first"))
        before = md.read_text(), page.read_text()
        assert "first" in before[0] and "first" in before[1]
        fill(disk)
        with pytest.raises(AtomicWriteError, match="disk full"):
            write_report(disk, _summary("second " + "x" * 200_000))
        assert (md.read_text(), page.read_text()) == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "report.html", "report.md"]
