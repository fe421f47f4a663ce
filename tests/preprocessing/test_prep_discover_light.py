"""Finding slides and parsing ``acmil preprocess`` need no torch: ``SlideSource`` lives with the slide readers,
not with the encoding driver, and the command imports the driver only to run it."""

from __future__ import annotations

import subprocess
import sys

from acmil.preprocessing.discover import discover
from acmil.preprocessing.slide import SlideSource


def test_discover_imports_without_torch():
    code = "import acmil.preprocessing.discover, sys; assert 'torch' not in sys.modules, 'torch imported'"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_preprocess_parsing_imports_without_torch(tmp_path):
    code = (
        "import sys; from acmil.preprocessing.cli import preprocess_config; "
        f"c = preprocess_config(['--slides', 's', '--out', {str(tmp_path)!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_preprocess_help_imports_neither_torch_nor_scipy():
    """scipy.stats alone (acmil.geometry's rank normalisation) took preprocess --help from 1.2 s to 2.7 s."""
    code = (
        "import sys, contextlib, io; from acmil.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): code = main(['preprocess', '--help'])\n"
        "print(code, sorted(m for m in ('torch', 'scipy', 'timm') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["0", "[]"], run.stdout[-500:] + run.stderr[-2000:]


def test_discover_lists_slide_sources_from_a_csv(tmp_path):
    (tmp_path / "a.svs").write_bytes(b"")
    (tmp_path / "list.csv").write_text("path,slide_id,mpp\na.svs,case 1,0.25\n")
    assert discover(tmp_path / "list.csv") == [SlideSource(path=tmp_path / "a.svs", slide_id="case 1", mpp=0.25)]
