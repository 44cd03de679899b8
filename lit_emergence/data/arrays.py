"""Compact NumPy storage of one split's trajectories, with bit-packed contact records.

Contacts are the bulk of a trajectory's bytes if stored as booleans (N*N per frame against
4*N floats for positions and velocities), so they are kept packed eight pairs to a byte
with :func:`numpy.packbits` along the last axis and unpacked one batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Names of the arrays a split is made of, as they appear in the cache.
ARRAY_NAMES: tuple[str, ...] = ("positions", "velocities", "radii", "contacts_packed")


def packed_width(num_particles: int) -> int:
    """Bytes needed to hold one row of ``num_particles`` contact bits."""
    return (num_particles + 7) // 8


def pack_contacts(contacts: np.ndarray) -> np.ndarray:
    """Pack boolean contact matrices eight partners to a byte.

    Args:
        contacts: Boolean array (..., N, N).

    Returns:
        uint8 array (..., N, ceil(N / 8)).

    """
    return np.packbits(np.asarray(contacts, dtype=bool), axis=-1)


def unpack_contacts(packed: np.ndarray, num_particles: int) -> np.ndarray:
    """Inverse of :func:`pack_contacts`.

    Args:
        packed: uint8 array (..., N, ceil(N / 8)).
        num_particles: N, the number of columns to recover (the padding bits are dropped).

    Returns:
        Boolean array (..., N, N).

    """
    return np.unpackbits(packed, axis=-1, count=num_particles).view(bool)


@dataclass(frozen=True)
class TrajectoryArrays:
    """All trajectories of one split (train, val or test) as NumPy arrays.

    Attributes:
        positions: float32 (S, T, N, 2) disc centres at each recorded frame.
        velocities: float32 (S, T, N, 2) velocities at each recorded frame.
        radii: float32 (S, N) disc radii (constant along a trajectory).
        contacts_packed: uint8 (S, T-1, N, ceil(N/8)), the pairs that overlapped at any
            substep of the interval t -> t+1, packed with :func:`pack_contacts`.

    """

    positions: np.ndarray
    velocities: np.ndarray
    radii: np.ndarray
    contacts_packed: np.ndarray

    def __post_init__(self) -> None:
        S, T, N, _ = self.positions.shape
        expected = {
            "positions": ((S, T, N, 2), np.float32),
            "velocities": ((S, T, N, 2), np.float32),
            "radii": ((S, N), np.float32),
            "contacts_packed": ((S, T - 1, N, packed_width(N)), np.uint8),
        }
        for name, (shape, dtype) in expected.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"TrajectoryArrays.{name} has shape {array.shape} and dtype {array.dtype}; "
                    f"expected {shape} and {np.dtype(dtype)}"
                )

    @property
    def num_scenes(self) -> int:
        """S, the number of trajectories."""
        return self.positions.shape[0]

    @property
    def num_frames(self) -> int:
        """T, the number of recorded frames per trajectory."""
        return self.positions.shape[1]

    @property
    def num_particles(self) -> int:
        """N, the number of discs per scene."""
        return self.positions.shape[2]

    def contacts(self, scenes: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Unpack the contact matrices of selected intervals.

        Args:
            scenes: int array of scene indices, any shape ``I``.
            frames: int array broadcastable with ``scenes``; interval ``t -> t+1``.

        Returns:
            Boolean array (*I, N, N).

        """
        return unpack_contacts(self.contacts_packed[scenes, frames], self.num_particles)

    def as_dict(self) -> dict[str, np.ndarray]:
        """Return the arrays keyed by the names in :data:`ARRAY_NAMES`."""
        return {name: getattr(self, name) for name in ARRAY_NAMES}
