"""No command accepts an abbreviated option: argparse's prefix matching silently turned ``--tile-s`` into
``--tile-size`` and ``--trainer.max_epoch`` into ``max_epochs``. ``--hel`` is a prefix of ``--help`` in every
parser, so a command that still matched prefixes would print its help and exit 0."""

from __future__ import annotations

import pytest

from acmil.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_abbreviated_option_is_an_error(command: str, capsys) -> None:
    # In this process, through the same entry point as `acmil` (a subprocess per command paid Lightning's
    # import three times over; `python -m acmil` itself is tested in tests/packaging).
    code = main([command, "--hel"])
    out, err = capsys.readouterr()
    assert code == 2, (command, code, out[-500:], err[-500:])
    assert "usage:" not in out.lower(), f"{command} printed its help for --hel"
    assert "Traceback" not in err, err[-2000:]
