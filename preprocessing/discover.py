"""Finding slides: a folder (recursive), a glob, a single file, or a CSV list; and sharding the list."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from acmil.geometry import SLIDE_EXTENSIONS

from .slide import SlideSource, slide_id_of


def discover(slides: str | os.PathLike, pattern: str | None = None) -> list[SlideSource]:
    """The slides to process, sorted by slide id.

    Args:
        slides: a folder (searched recursively), a slide file, or a ``.csv`` with a ``path`` column (relative
            paths are relative to the CSV) and optional ``slide_id`` and ``mpp`` columns.
        pattern: a glob relative to the folder (e.g. ``"**/*.svs"``) instead of the known extensions.

    Raises:
        FileNotFoundError: the folder / file does not exist. ValueError: a bad CSV or duplicate slide ids.
    """
    root = Path(slides)
    if not root.exists():
        raise FileNotFoundError(f"{root}: slide folder or list not found")
    if root.is_file() and root.suffix.lower() == ".csv":
        sources = _from_csv(root)
    elif root.is_file():
        sources = [SlideSource(path=root, slide_id=slide_id_of(root))]
    else:
        if pattern:
            files = [p for p in root.glob(pattern) if p.is_file()]
        else:
            files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS]
        files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
        sources = [SlideSource(path=p, slide_id=slide_id_of(p)) for p in files]
    seen: dict[str, Path] = {}
    for s in sources:
        if s.slide_id in seen:
            raise ValueError(
                f"duplicate slide id {s.slide_id!r}: {seen[s.slide_id]} and {s.path} "
                "(feature files are named by slide id; rename one or list slides in a CSV with slide_id)"
            )
        seen[s.slide_id] = s.path
    return sorted(sources, key=lambda s: s.slide_id)


def _from_csv(path: Path) -> list[SlideSource]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: slide list needs a 'path' column (optional: slide_id, mpp)")
        out = []
        for i, row in enumerate(reader, start=2):
            p = Path(row["path"].strip())
            p = p if p.is_absolute() else path.parent / p
            mpp = (row.get("mpp") or "").strip()
            try:
                value = float(mpp) if mpp else None
            except ValueError:
                raise ValueError(f"{path}: line {i}: mpp {mpp!r} is not a number") from None
            slide_id = (row.get("slide_id") or "").strip() or slide_id_of(p)
            out.append(SlideSource(path=p, slide_id=slide_id, mpp=value))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard(sources: list[SlideSource], index: int, count: int) -> list[SlideSource]:
    """Every ``count``-th slide starting at ``index`` (of the list sorted by id): shards partition the list."""
    ordered = sorted(sources, key=lambda s: s.slide_id)
    return ordered[index::count]
