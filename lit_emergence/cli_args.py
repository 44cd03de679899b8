"""Argument parsing shared by the ``lit-emergence`` subcommands (torch-free, for a fast ``--help``).

Checked number types for ``argparse`` (a bad value is one line naming the option and what it
must be) and a parser whose errors are that one line, without argparse's usage block.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

__all__ = [
    "OneLineErrorParser",
    "fail",
    "integer",
    "non_negative_float",
    "non_negative_int",
    "number",
    "positive_float",
    "positive_int",
]


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on stderr and exit with status 2."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


class OneLineErrorParser(argparse.ArgumentParser):
    """Argument errors as one ``PROG: error: ...`` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print the one-line error and exit with status 2."""
        fail(self.prog, message)


def number(text: str) -> float:
    """A float, or an argparse error naming the text."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0."""
    value = number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be finite and >= 0, got {text}")
    return value


def integer(text: str, low: int) -> int:
    """An integer >= ``low``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return integer(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return integer(text, 0)
