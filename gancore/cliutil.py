"""Options and logging shared by every ganforge command (gan-train, gan-eval, gan-export,
gan-sample): ``--version``, ``-v/--verbose``, ``-q/--quiet``.

Torch-free (stdlib only), so ``gan-sample`` can use it without importing torch. Logs go to
stderr as plain ``%(message)s`` lines: INFO by default, DEBUG with ``-v``, WARNING with ``-q``.
Results a program may read (JSON, file lists) stay on stdout and are not logging.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import metadata

PACKAGE = "ganforge"
# Our loggers are named after their modules; these are the packages they live in.
LOGGER_ROOTS = ("training", "export", "gancore", "serving")


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def add_common_args(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """Add ``--version``, ``-v`` and ``-q`` to ``parser``.

    ``nested=True`` for a subcommand's parser: the flags then only set a value when given, so
    ``gan-eval -q stats ...`` and ``gan-eval stats -q ...`` both work (argparse would otherwise let
    the subparser's defaults overwrite what the main parser parsed).
    """
    default = argparse.SUPPRESS if nested else False
    parser.add_argument("--version", action="version", version=f"{parser.prog} {package_version()}")
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="more detail on stderr (debug messages)",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="only warnings and errors on stderr",
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def log_level(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", False):
        return logging.WARNING
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.INFO


def configure_logging(args: argparse.Namespace) -> int:
    """Send our packages' log records at the level ``args`` asks for to stderr; returns it.

    Calling it again (tests call ``main()`` many times) replaces the handler it installed.
    Other libraries' loggers keep Python's default (warnings and errors only).
    """
    level = log_level(args)
    for name in LOGGER_ROOTS:
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if isinstance(h, _StderrHandler)]:
            lg.removeHandler(h)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        lg.addHandler(handler)
        lg.setLevel(level)
    return level


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars follow the log level: hidden with ``-q``."""
    return log_level(args) <= logging.INFO
