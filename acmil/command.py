"""The one shape of a command that is not LightningCLI: a config dataclass, ``run_<command>(config) ->
<Command>Result``, and a thin ``main(argv)`` that parses, calls it and prints.

Every such command parses with jsonargparse through :func:`command_parser`, so it takes ``--config
FILE.yaml`` (keys are the option names with ``_``) and ``--print_config``, and answers a mistyped option with
one short line and a close option name. :func:`config_from` builds the config dataclass by keyword from
the parsed namespace, so adding an option is: a field on the dataclass, an ``add_argument`` on the parser.

    @dataclass(kw_only=True)
    class CompareConfig:
        run_a: Path
        n_boot: int = 1000

    def run_compare(config: CompareConfig) -> CompareResult: ...

    def main(argv: list[str] | None = None) -> int:
        config = config_from(build_parser().parse_args(argv), CompareConfig)
        print(run_compare(config).table)
        return 0

``cv`` and ``demo`` compose ``run_*`` calls and read their results, never each other's argv or files.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from typing import Any, NoReturn, TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser

ConfigT = TypeVar("ConfigT")


def short_error(parser: Any, message: str, hint: str | None = None) -> NoReturn:
    """Print ``message`` with a close option name (``--n-bot`` -> ``did you mean --n-boot?``) and exit 2.

    Shared by :class:`CommandParser` and the training CLI's LightningCLI parser, instead of 60 lines of usage.
    """
    known = [opt for action in parser._actions for opt in action.option_strings]  # noqa: SLF001 - argparse's own list
    hints = []
    for given in re.findall(r"--[\w.-]+", message):
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.8)
        if close and close[0] != given:
            hints.append(f"did you mean {close[0]}?")
    sys.stderr.write(
        f"{parser.prog}: error: {message}\n"
        + "".join(f"  {h}\n" for h in hints)
        + f"  ({hint or f'{parser.prog} --help for the options'})\n"
    )
    sys.exit(2)


class CommandParser(ArgumentParser):
    """jsonargparse's parser with a short error (set ``JSONARGPARSE_DEBUG=1`` for jsonargparse's own)."""

    config_files: tuple[str, ...] = ()

    def parse_args(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        # remembered so that an error from a file's content names the file
        self.config_files = tuple(
            a.split("=", 1)[1] if a.startswith("--config=") else argv[i + 1]
            for i, a in enumerate(argv)
            if (a == "--config" and i + 1 < len(argv)) or a.startswith("--config=")
        )
        return super().parse_args(argv, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        if self.config_files and not any(f in message for f in self.config_files):
            message += f" (options from --config {', '.join(self.config_files)} and the command line)"
        short_error(self, message)


class AppendAction(argparse._AppendAction):
    """``action="append"`` that also appends to a single value from a config file (``checkpoint: a.ckpt``
    then ``--checkpoint b`` gives both); argparse's would fail on the string. Pair it with :func:`as_list`."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if isinstance(getattr(namespace, self.dest, None), str):
            setattr(namespace, self.dest, [getattr(namespace, self.dest)])
        super().__call__(parser, namespace, values, option_string)


def as_list(value: Any) -> list | None:
    """A repeatable option's value as a list: a config file may give one value without brackets."""
    if value is None or isinstance(value, list):
        return value
    return list(value) if isinstance(value, tuple) else [value]


def command_parser(
    prog: str,
    description: str,
    epilog: str | None = None,
    config_action: type[ActionConfigFile] = ActionConfigFile,
    config_help: str = "a YAML file of option values (see --print_config)",
) -> CommandParser:
    """A parser for ``prog`` with ``--config`` (a YAML of option values) and ``--print_config`` already on it.

    Options are added with the usual ``add_argument`` (dashes in names are fine: ``--n-boot`` is the key
    ``n_boot`` in a config file). Abbreviations are refused: ``--out`` never silently means ``--outdir``.
    ``config_action``: a subclass of jsonargparse's ``ActionConfigFile`` for a command whose ``--config``
    also reads another kind of file (``acmil test`` takes a run's ``config.yaml``).
    """
    parser = CommandParser(
        prog=prog,
        description=description,
        epilog=epilog,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action=config_action, help=config_help)
    return parser


def config_from(namespace: Any, config_class: type[ConfigT], **overrides: Any) -> ConfigT:
    """Build ``config_class`` by keyword from a parsed namespace: each dataclass field from the key of its name.

    Keys the dataclass lacks (``config``) are ignored; a field the parser lacks keeps its default.
    ``overrides`` replace parsed values (for values converted after parsing, such as a list of paths).
    """
    values = namespace.as_dict() if hasattr(namespace, "as_dict") else vars(namespace)
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(config_class) if f.init and f.name in values}
    kwargs.update(overrides)
    return config_class(**kwargs)
