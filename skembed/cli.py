"""The skembed command line.

Each sub-command lives in its own module, imported only when that sub-command runs: the
``--help`` and ``--version`` of the command line import neither torch nor transformers.
A module registers its sub-commands with :func:`command` (``name -> (help, run)``;
``run.add_arguments(parser)`` adds the options) and is named in :data:`MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable

# Registered sub-commands: name -> (one-line help, run(args) -> exit status).
COMMANDS: dict[str, tuple[str, Callable]] = {}

# Sub-commands defined in other modules: name -> (module, one-line help). The help is
# repeated here so that ``skembed --help`` lists them without importing anything.
MODULES: dict[str, tuple[str, str]] = {
    "embed": (
        "skembed._cli_embed",
        "embed a file of documents (CSV, TSV, Parquet, JSON Lines, text) into Parquet, .npy or CSV",
    ),
    "info": ("skembed._cli_info", "versions, devices, precisions, model folders and caches"),
    "cache": ("skembed._cli_info", "show or clear skembed's caches on disk"),
    "quickstart": (
        "skembed.quickstart",
        "train and score a small text classifier on the packaged MiniLM",
    ),
    "train-lm": ("skembed.flair.cli", "train a Flair character language model"),
}

DESCRIPTION = """\
Contextual token and document embeddings from the command line.

examples:
  skembed embed reviews.csv vectors.parquet --column text
  skembed embed notes.txt tokens.parquet --level token
  skembed info
  skembed cache info

Run "skembed COMMAND --help" for the options of a command.
"""


def command(name: str, help: str):
    """Register ``run(args)`` as a sub-command; ``run.add_arguments(parser)`` adds its options."""

    def register(run):
        COMMANDS[name] = (help, run)
        return run

    return register


@command("quickstart", MODULES["quickstart"][1])
def _quickstart(args) -> int:
    """Train and score a small text classifier on the packaged MiniLM model, offline."""
    from .quickstart import main as quickstart_main

    return quickstart_main(args=args)


def _quickstart_arguments(parser) -> None:
    from .quickstart import add_arguments

    add_arguments(parser)


_quickstart.add_arguments = _quickstart_arguments


def _version() -> str:
    from . import __version__

    return f"skembed {__version__}"


def _chosen(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def _description(run: Callable, help_text: str) -> str:
    doc = inspect.cleandoc(run.__doc__ or "")
    return doc or help_text[:1].upper() + help_text[1:] + "."


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with the options of the sub-command chosen in ``argv`` (only its module is
    imported)."""
    parser = argparse.ArgumentParser(
        prog="skembed",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    names = dict.fromkeys([*MODULES, *COMMANDS])
    for name in names:
        help_text = COMMANDS[name][0] if name in COMMANDS else MODULES[name][1]
        if name != chosen:
            sub.add_parser(name, help=help_text)
            continue
        if name not in COMMANDS:
            importlib.import_module(MODULES[name][0])
        run = COMMANDS[name][1]
        p = sub.add_parser(
            name,
            help=help_text,
            description=_description(run, help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if hasattr(run, "add_arguments"):
            run.add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``skembed`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    # Run the registry of the imported module (sub-command modules import skembed.cli,
    # not __main__), so that their registrations are seen.
    from skembed.cli import main as _main

    sys.exit(_main())
