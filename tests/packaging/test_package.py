"""Packaging, start-up time and the dependency directions of DESIGN.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# folder -> acmil subpackages its modules must never import
FORBIDDEN = {
    "models": (
        "acmil.training",
        "acmil.service",
        "acmil.preprocessing",
        "acmil.features",
        "acmil.analysis",
        "lightning",
        "h5py",
        "acmil.checkpoint",
    ),
    "preprocessing": ("acmil.training", "acmil.service", "acmil.analysis", "lightning", "acmil.models"),
    "acmil": ("acmil.service",),
    # test and demo data: the core's leaf modules only, so preprocessing and training tests may both use it
    "acmil/synthetic": ("acmil.training", "acmil.service", "acmil.preprocessing", "acmil.analysis", "lightning"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependency_directions(folder):
    offenders = []
    for path in (REPO / folder).rglob("*.py"):
        if folder == "acmil" and path.name == "cli.py":
            continue  # the CLI dispatches to every part by design (lazily, by module name)
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder]):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_models_import_only_torch():
    for path in (REPO / "models").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in {"torch", "__future__", "dataclasses", "typing", "collections", "math"}, (
                f"{path.relative_to(REPO)} imports {name}: models/ is torch only"
            )


def test_subpackages_are_namespaced_under_acmil():
    code = "import acmil.models, acmil.preprocessing, acmil.service, sys; print('models' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "False"


def test_help_is_fast_and_lists_commands():
    """Fast = imports nothing heavy (torch alone takes seconds); the wall time is measured by
    ``benchmarks/bench_training.py --help-times``, not asserted here, where a busy machine would fail it."""
    out = subprocess.run([sys.executable, "-m", "acmil", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "cv", "predict", "preprocess", "serve", "demo", "import-checkpoint"):
        assert command in out.stdout
    heavy = ("torch", "lightning", "numpy", "h5py", "timm", "fastapi", "openslide")
    code = (
        f"import sys; from acmil.cli import main; main(['--help']); print([m for m in {heavy!r} if m in sys.modules])"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.splitlines()[-1] == "[]", imported.stdout[-500:]


def test_unknown_command_fails_on_stderr():
    out = subprocess.run([sys.executable, "-m", "acmil", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_the_command_ends_through_run_which_freezes_the_heap():
    """``acmil`` and ``python -m acmil`` end in :func:`acmil.cli.run`: the exit code of ``main``, after
    ``gc.freeze()`` (the shutdown collections over torch's and Lightning's objects cost about a second)."""
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="console_scripts", name="acmil")] == ["acmil.cli:run"]
    code = (
        "import gc, sys, acmil.cli as cli; freeze = gc.freeze; "
        "gc.freeze = lambda: (print('frozen'), freeze()); sys.argv = ['acmil', *sys.argv[1:]]; cli.run()"
    )
    ok = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True)
    lines = ok.stdout.splitlines()
    assert ok.returncode == 0 and lines[0].startswith("acmil ") and lines[1] == "frozen", ok.stdout + ok.stderr
    bad = subprocess.run([sys.executable, "-c", code, "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "frozen" in bad.stdout
