"""The ``genserve`` command: ``serve``, ``demo``, ``export``, ``train`` and ``bench``.

Each subcommand is a module with its own ``main(argv)`` and parser (so ``genserve export --help`` is
export's own); this module only dispatches. The imports sit inside the runners on purpose: the
serving path must not load torch, which ``export`` and ``train`` need.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help and the function that runs it with the rest of the arguments."""

    help: str
    run: Callable[[list[str]], int | None]


def _serve(argv: list[str]) -> int | None:
    from genserve.server.cli import main

    return main(argv)


def _demo(argv: list[str]) -> int | None:
    from genserve.cli.demo import main

    return main(argv)


def _export(argv: list[str]) -> int | None:
    from genserve.export.cli import main

    return main(argv)


def _train(argv: list[str]) -> int | None:
    from genserve.export.cli_train import main

    return main(argv)


def _bench(argv: list[str]) -> int | None:
    from genserve.benchmarks.cli import main

    return main(argv)


COMMANDS = {
    "serve": Command("run a real Triton server on this host with the model repository", _serve),
    "demo": Command("serve every model and write sample images through the client", _demo),
    "export": Command("export the models to ONNX into the model repository (needs torch)", _export),
    "train": Command("train a model family and write its weights (needs torch)", _train),
    "bench": Command("run the benchmark sweep and write its report", _bench),
}
"""Subcommand name -> :class:`Command`; a new command group is one module and one entry here."""


def build_parser() -> argparse.ArgumentParser:
    """The umbrella parser; it lists the subcommands, whose options their own modules parse."""
    parser = argparse.ArgumentParser(prog="genserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genserve`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return int(COMMANDS[argv[0]].run(argv[1:]) or 0)
    build_parser().parse_args(argv)  # prints usage (or --help) and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
