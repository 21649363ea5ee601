"""The ``pooling-mdp`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a
function ``handler(args) -> int``. Invalid input (``ValueError`` from the
library, or an argument the parser rejects) prints one line to stderr and exits
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("solve", "run", "simulate", "equilibrium")


class _Parser(argparse.ArgumentParser):
    """Argument parser that reports errors in one line and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every registered sub-command."""
    from .. import __version__

    parser = _Parser(
        prog="pooling-mdp",
        description="Token mechanism for decentralized resource pooling: best-deviation MDP, "
                    "experiments, mean-field equilibrium and simulation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"pooling-mdp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pooling-mdp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``| head``); exit quietly as
        # the Python documentation on SIGPIPE recommends.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
