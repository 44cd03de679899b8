"""Old option spellings, still accepted for one release with a one-line note.

Every option of our own commands is spelled with underscores (``--time_axis``), like
LightningCLI's (``--ckpt_path``, ``--trainer.max_steps``). A command that renamed an option
passes its table of old -> new spellings to :func:`replace_deprecated` before parsing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence


def replace_deprecated(argv: Sequence[str], renamed: Mapping[str, str], prog: str) -> list[str]:
    """``argv`` with every old option spelling replaced by the new one.

    Each old spelling used writes one line to stderr naming its replacement. Arguments after
    ``--`` belong to another command and are left alone.

    Args:
        argv: The command's arguments.
        renamed: Old spelling -> new spelling (``{"--time-axis": "--time_axis"}``).
        prog: The command's name, starting the note.

    Returns:
        The arguments with ``--old`` and ``--old=value`` written as ``--new`` and ``--new=value``.
    """
    result = list(argv)
    end = result.index("--") if "--" in result else len(result)
    noted: set[str] = set()
    for index, argument in enumerate(result[:end]):
        option, equals, value = argument.partition("=")
        new = renamed.get(option)
        if new is None:
            continue
        result[index] = f"{new}{equals}{value}"
        if option not in noted:
            noted.add(option)
            sys.stderr.write(
                f"{prog}: warning: {option} is deprecated and will be removed in the next "
                f"release; use {new}\n"
            )
    return result
