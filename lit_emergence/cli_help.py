"""Cached ``--help`` texts: a command's help in a fraction of a second, never out of date.

``lit-emergence fit --help`` is LightningCLI's help, built by jsonargparse from the signatures
and docstrings of the Trainer, the model and the data module: it needs torch and Lightning
imported, seconds on a small machine. The text is a pure function of the things it is built
from, so the first ``--help`` of a command stores it and later ones print it from the store
without importing either. The store is keyed by everything that can change the text:

* the command and the program name the usage line shows;
* the source of this package (a SHA-256 of every ``.py`` file in it, so any edit counts);
* the installed packages: the ``*.dist-info`` / ``*.egg-info`` names (name and version) in every
  folder of ``sys.path``, so installing, upgrading or removing any package counts;
* the Python version, the terminal width argparse wraps to, ``PYTHONPATH`` and the environment
  variables LightningCLI and jsonargparse read (``PL_*``, ``JSONARGPARSE_*``).

A new key is a new entry, so an old text is never served for a changed input; the entry it
replaces is deleted. An entry also names its key inside, and one that cannot be read or does
not match is built again. Entries are written under a unique temporary name and moved into
place, so concurrent first calls cannot leave a half-written one. The store is
``$LIT_EMERGENCE_CACHE_DIR/help`` (default ``$XDG_CACHE_HOME/lit_emergence/help``, else
``~/.cache/lit_emergence/help``); ``LIT_EMERGENCE_NO_HELP_CACHE=1`` turns it off. A folder that
cannot be written only costs the speed: the text is printed all the same.

What the key cannot see: an installed dependency edited in place, with no change of version
(its ``dist-info`` name stays the same); set the switch above, or remove the folder, then.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR_ENV = "LIT_EMERGENCE_CACHE_DIR"
NO_CACHE_ENV = "LIT_EMERGENCE_NO_HELP_CACHE"
HELP_FLAGS = ("-h", "--help")
# Environment variables that change what LightningCLI and jsonargparse print.
_ENV_PREFIXES = ("PL_", "JSONARGPARSE_")
_ENV_NAMES = ("PYTHONPATH",)
# Bumped when the entry format or the key's recipe changes.
_FORMAT = 1


def help_request(argv: Sequence[str], commands: Sequence[str]) -> tuple[str, ...] | None:
    """The command of a bare help request, ``[COMMAND] --help``; None for anything else.

    Args:
        argv: The arguments after the program name.
        commands: The command names whose help may be cached.

    Returns:
        ``()`` for the top level, ``(COMMAND,)`` for a command, or None when ``argv`` is not
        exactly a help flag after at most one known command (other arguments, such as a
        config, can change the defaults the help shows).
    """
    if not argv or argv[-1] not in HELP_FLAGS or len(argv) > 2:
        return None
    command = tuple(argv[:-1])
    return command if all(name in commands for name in command) else None


def captured(call: Callable[[], object]) -> str:
    """What ``call`` writes to stdout; it may end with ``SystemExit(0)``, as help does.

    Raises:
        SystemExit: With the call's status when it exits with any other one (its output is
            written through first).
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            call()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            sys.stdout.write(buffer.getvalue())
            raise
    return buffer.getvalue()


def default_cache_dir() -> Path:
    """``$LIT_EMERGENCE_CACHE_DIR/help``, else the user's cache folder (see the module doc)."""
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "lit_emergence"
    return Path(root) / "help"


def source_digest(package: Path) -> str:
    """SHA-256 over the relative path and content of every ``.py`` file under ``package``."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def installed_distributions() -> list[str]:
    """``folder/name`` of every ``*.dist-info`` and ``*.egg-info`` in the ``sys.path`` folders."""
    found = []
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:  # a zip file or a folder that does not exist
            continue
        found += [f"{folder}/{n}" for n in sorted(names) if n.endswith((".dist-info", ".egg-info"))]
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-") or "main"


@dataclass(frozen=True)
class HelpCache:
    """A folder of help texts keyed by everything they depend on (see the module docstring).

    Attributes:
        directory: Where the entries live (created on the first store).
        package: The package whose source is part of the key.
    """

    directory: Path
    package: Path

    def key(self, command: Sequence[str], prog: str) -> str:
        """The SHA-256 key of a command's help under the current package, Python and terminal."""
        parts = {
            "format": _FORMAT,
            "command": list(command),
            "prog": prog,
            "source": source_digest(self.package),
            "installed": installed_distributions(),
            "python": sys.version,
            "columns": shutil.get_terminal_size().columns,
            "environment": {
                name: value
                for name, value in sorted(os.environ.items())
                if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES
            },
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def text(self, command: Sequence[str], prog: str, build: Callable[[], str]) -> str:
        """The stored help of ``command``, or ``build()``'s text, stored for the next call.

        Args:
            command: ``()`` for the top level, else ``(COMMAND,)``.
            prog: The program name the text's usage lines show.
            build: Returns the help text as the command itself prints it.

        Returns:
            The help text.
        """
        key = self.key(command, prog)
        prefix = f"{_slug('-'.join(command))}--{_slug(prog)}--"
        path = self.directory / f"{prefix}{key[:32]}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] == key:
                return entry["text"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no entry yet, or a damaged one: build it again
        text = build()
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            self._store(path, prefix, {"key": key, "text": text})
        return text

    def _store(self, path: Path, prefix: str, entry: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: two first calls at once must not write into one file.
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(entry, file)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        for old in path.parent.glob(f"{prefix}*.json"):  # the entries this one supersedes
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()


def cache_enabled() -> bool:
    """False when ``LIT_EMERGENCE_NO_HELP_CACHE`` is set to anything but ``""`` or ``0``."""
    return os.environ.get(NO_CACHE_ENV, "") in ("", "0")
