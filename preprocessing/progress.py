"""Progress of a preprocessing run: two tqdm bars on a terminal, one line per slide in a log, or nothing.

Nested bars redraw with carriage returns and cursor moves; in a file (stderr redirected, a batch job's log)
they pile up as garbage. So ``"auto"`` draws bars only when stderr is a terminal and otherwise writes one
plain line per finished slide, e.g. ``[3/24] syn_002_normal: ok, 240 tiles, 3.1 s``.
"""

from __future__ import annotations

import sys

MODES = ("auto", "bars", "lines", "none")


def resolve_mode(mode: bool | str) -> str:
    """``True``/"auto" -> "bars" on a terminal else "lines"; ``False`` -> "none"."""
    if mode is True or mode == "auto":
        return "bars" if sys.stderr.isatty() else "lines"
    if mode is False or mode is None:
        return "none"
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class Progress:
    """Reports slides (and, with bars, tiles) as they are done."""

    def __init__(self, mode: bool | str, n_slides: int | None = None) -> None:
        self.mode = resolve_mode(mode)
        self.n_slides = n_slides
        self.n_done = 0
        self._slides = self._tiles = None
        if self.mode == "bars":
            from tqdm.auto import tqdm

            self._slides = tqdm(total=n_slides, desc="slides", unit="slide", position=0)
            self._tiles = tqdm(total=0, desc="tiles", unit="tile", position=1, leave=False)

    def add_tiles(self, n: int) -> None:
        if self._tiles is not None:
            self._tiles.total = (self._tiles.total or 0) + n
            self._tiles.refresh()

    def tiles_done(self, n: int) -> None:
        if self._tiles is not None:
            self._tiles.update(n)

    def slide_done(self, res) -> None:
        """``res``: a :class:`~.manifest.SlideOutcome`."""
        self.n_done += 1
        if self._slides is not None:
            self._slides.update(1)
            self._slides.set_postfix_str(f"{res.slide_id}: {res.status}")
        elif self.mode == "lines":
            of = f"/{self.n_slides}" if self.n_slides else ""
            what = f"{res.n_tiles} tiles, {res.seconds:.1f} s" if res.status != "failed" else res.error
            print(f"[{self.n_done}{of}] {res.slide_id}: {res.status}, {what}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.mode == "bars":
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)
        elif self.mode == "lines":
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self._tiles, self._slides):
            if bar is not None:
                bar.close()
