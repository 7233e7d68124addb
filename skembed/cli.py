"""The ``skembed`` command line: ``skembed quickstart`` and the other sub-commands.

Each sub-command registers itself in :data:`COMMANDS` as ``name -> (add_arguments, run)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[Callable, Callable]] = {}


def command(name: str, help: str):
    """Register ``run(args)`` as a sub-command; ``run.add_arguments(parser)`` adds its options."""

    def register(run):
        COMMANDS[name] = (help, run)
        return run

    return register


@command("quickstart", "train and score a small text classifier on the packaged MiniLM")
def _quickstart(args) -> int:
    from .quickstart import main as quickstart_main

    return quickstart_main()


def _load_plugins() -> None:
    # Sub-commands defined next to their feature register themselves on import.
    for module in ("skembed.flair.cli",):
        try:
            __import__(module)
        except ImportError:
            pass


def main(argv=None) -> int:
    """Entry point of the ``skembed`` command."""
    _load_plugins()
    parser = argparse.ArgumentParser(prog="skembed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if hasattr(run, "add_arguments"):
            run.add_arguments(p)
        p.set_defaults(_run=run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
