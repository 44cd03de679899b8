"""Atomic, checksummed on-disk cache of NumPy arrays keyed by a JSON-serialisable description.

Layout: ``<root>/<key hash>/meta.json`` plus one ``<name>.npy`` per array. ``meta.json``
holds the key itself (so a hash collision or a hand-edited cache is detected), each array's
shape, dtype and sha256 checksum.

A cache directory is written in a temporary sibling directory, fsynced, then renamed into
place, so a reader sees either nothing or a complete cache, and a crash midway leaves no
directory under the final name. Concurrent writers of the same key are safe: the first
rename wins and the others discard their copy when they find a valid one in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "meta.json"
_HASH_CHUNK_BYTES = 1 << 22


class CacheError(Exception):
    """A cache directory exists but is unusable (corrupt, incomplete or for another key)."""


def _canonical(key: dict[str, Any]) -> dict[str, Any]:
    """Return the key as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(key, sort_keys=True))


def key_hash(key: dict[str, Any], length: int = 16) -> str:
    """Stable hexadecimal digest of a JSON-serialisable key (used as the directory name)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cache_directory(root: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Directory under ``root`` where the arrays for ``key`` live."""
    return Path(root).expanduser() / key_hash(key)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def load_arrays(
    directory: Path, key: dict[str, Any], required: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """Load and verify every array of a cache directory.

    Args:
        directory: The cache directory (from :func:`cache_directory`).
        key: The key the caller expects; must equal the one stored in ``meta.json``.
        required: Names of arrays that must be present.

    Returns:
        Arrays by name, fully read into memory.

    Raises:
        FileNotFoundError: If ``directory`` does not exist.
        CacheError: If the directory exists but its meta data is missing or unreadable, is
            for another key, or an array is missing, has the wrong checksum, shape or dtype.

    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no cache at {directory}")
    try:
        meta = json.loads((directory / META_FILE).read_text())
        stored_key, entries = meta["key"], meta["arrays"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CacheError(f"unreadable {META_FILE} in {directory}: {error}") from error
    if stored_key != _canonical(key):
        raise CacheError(f"{directory / META_FILE} describes a different configuration")
    missing = sorted(set(required) - set(entries))
    if missing:
        raise CacheError(f"{directory} lacks the arrays {missing}")
    arrays = {}
    for name, entry in entries.items():
        path = directory / f"{name}.npy"
        try:
            checksum = file_sha256(path)
        except OSError as error:
            raise CacheError(f"cannot read {path}: {error}") from error
        if checksum != entry["sha256"]:
            raise CacheError(f"checksum mismatch for {path}")
        array = np.load(path, allow_pickle=False)
        if list(array.shape) != entry["shape"] or str(array.dtype) != entry["dtype"]:
            raise CacheError(
                f"{path} has shape {array.shape} and dtype {array.dtype}, "
                f"meta says {entry['shape']} and {entry['dtype']}"
            )
        arrays[name] = array
    return arrays


def _fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheWriter:
    """Allocates the arrays of a cache being written (see :func:`atomic_cache_writer`).

    Arrays are memory-mapped ``.npy`` files in the temporary directory, so a large data set
    is filled chunk by chunk without holding a second copy in memory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._arrays: dict[str, np.memmap] = {}

    def allocate(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.memmap:
        """Create an array file and return it as a writable memory map.

        Args:
            name: Array name (the file is ``<name>.npy``); unique within the cache.
            shape: Array shape.
            dtype: Array dtype.

        Returns:
            A writable array of that shape and dtype backed by the file.

        """
        if name in self._arrays:
            raise ValueError(f"array {name!r} allocated twice")
        array = np.lib.format.open_memmap(
            self.directory / f"{name}.npy", mode="w+", dtype=dtype, shape=shape
        )
        self._arrays[name] = array
        return array

    def _finish(self, key: dict[str, Any]) -> None:
        """Flush the arrays, checksum them and write ``meta.json``, all fsynced."""
        entries = {}
        for name, array in self._arrays.items():
            array.flush()
            entries[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
        self._arrays.clear()  # drop the memory maps before hashing and renaming
        for name, entry in entries.items():
            path = self.directory / f"{name}.npy"
            _fsync_path(path)
            entry["sha256"] = file_sha256(path)
        meta = {"key": _canonical(key), "arrays": entries}
        with open(self.directory / META_FILE, "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_path(self.directory)


def _publish(temporary: Path, final: Path, key: dict[str, Any]) -> None:
    """Rename a finished temporary cache into place, or discard it if a valid one won."""
    for _ in range(3):
        try:
            os.rename(temporary, final)  # atomic; fails if ``final`` is a non-empty directory
        except OSError:
            if not final.exists():
                continue  # it vanished between the rename and the check: try again
            try:
                load_arrays(final, key)
            except (CacheError, FileNotFoundError):
                # An invalid cache is in the way: move it aside atomically, then retry.
                trash = Path(tempfile.mkdtemp(prefix=f".trash-{final.name}-", dir=final.parent))
                with contextlib.suppress(OSError):  # another writer may have moved it first
                    os.rename(final, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
                continue
            shutil.rmtree(temporary, ignore_errors=True)  # a concurrent writer finished first
            return
        _fsync_path(final.parent)
        return
    shutil.rmtree(temporary, ignore_errors=True)
    raise CacheError(f"could not move a freshly written cache into {final}")


@contextmanager
def atomic_cache_writer(directory: Path, key: dict[str, Any]) -> Iterator[CacheWriter]:
    """Write a cache directory atomically.

    Example::

        with atomic_cache_writer(cache_directory(root, key), key) as writer:
            out = writer.allocate("positions", (S, T, N, 2), np.float32)
            out[:] = ...

    On a normal exit the arrays are checksummed, ``meta.json`` is written, everything is
    fsynced and the temporary directory is renamed to ``directory`` (replacing an invalid
    cache there; a valid one written meanwhile by another process is kept and ours is
    discarded). If the body raises, the temporary directory is removed and nothing appears
    under ``directory``.

    Args:
        directory: Final cache directory.
        key: The key stored in ``meta.json``.

    Yields:
        A :class:`CacheWriter` allocating arrays in the temporary directory.

    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        writer = CacheWriter(temporary)
        yield writer
        writer._finish(key)
        _publish(temporary, directory, key)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
