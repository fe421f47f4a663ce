"""No command accepts an abbreviated option: argparse's prefix matching silently turned ``--tile-s`` into
``--tile-size`` and ``--trainer.max_epoch`` into ``max_epochs``. ``--hel`` is a prefix of ``--help`` in every
parser, so a command that still matched prefixes would print its help and exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from acmil.cli import COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_abbreviated_option_is_an_error(command: str) -> None:
    run = subprocess.run([sys.executable, "-m", "acmil", command, "--hel"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, (command, run.returncode, run.stdout[-500:], run.stderr[-500:])
    assert "usage:" not in run.stdout.lower(), f"{command} printed its help for --hel"
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
