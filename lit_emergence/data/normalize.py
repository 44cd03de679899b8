"""Turn raw particle states into normalised model inputs and back.

Inputs per particle, in this order (F = 4 + 2*history + radius_feature):

- position relative to the box centre, in disc diameters ``2 * radius``          (2)
- velocity divided by the per-component velocity std of the training split       (2)
- the ``history`` previous velocities, oldest first, normalised the same way   (2*h)
- optionally the radius over the mean radius (when radii vary)                   (1)

The target is the velocity change over one frame interval, standardised with the mean and
std of the training split. All statistics come from the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_emergence.data.arrays import TrajectoryArrays
from lit_emergence.physics import SimulationConfig

# A statistic below this (e.g. the horizontal velocity change of a single disc that never
# touches anything) is treated as zero spread: its values are only centred, not scaled.
_MIN_STD = 1e-12


_TENSOR_FIELDS = (
    "center",
    "length_scale",
    "velocity_scale",
    "target_mean",
    "target_std",
    "radius_scale",
)


def _safe_std(std: np.ndarray) -> np.ndarray:
    """Replace a (near-)zero spread by 1 so that dividing by it is harmless."""
    return np.where(std > _MIN_STD, std, 1.0)


@dataclass(eq=False)
class FeatureNormalizer:
    """Feature and target normalisation, fitted on the training split.

    Attributes:
        center: (2,) centre of the box.
        length_scale: () disc diameter ``2 * radius``; positions are measured in it.
        velocity_scale: (2,) std of each velocity component over the training split.
        target_mean: (2,) mean velocity change per frame interval (training split).
        target_std: (2,) std of the velocity change per frame interval (training split).
        radius_scale: () mean radius ``radius``.
        frame_interval: Time between recorded frames.
        history: Number of previous velocities among the inputs.
        radius_feature: Whether the radius ratio is an input (radii vary).

    """

    center: Tensor
    length_scale: Tensor
    velocity_scale: Tensor
    target_mean: Tensor
    target_std: Tensor
    radius_scale: Tensor
    frame_interval: float
    history: int
    radius_feature: bool

    @classmethod
    def from_training_split(
        cls, train: TrajectoryArrays, config: SimulationConfig, history: int = 0
    ) -> FeatureNormalizer:
        """Fit the statistics on the training trajectories.

        Args:
            train: The training split only (never validation or test data).
            config: The settings the trajectories were simulated with.
            history: Number of previous velocities among the inputs.

        Returns:
            The fitted normaliser.

        """
        velocities = train.velocities  # (S, T, N, 2)
        velocity_std = velocities.reshape(-1, 2).std(axis=0, dtype=np.float64)
        change = (velocities[:, 1:] - velocities[:, :-1]).reshape(-1, 2)  # (S*(T-1)*N, 2)
        change_mean = change.mean(axis=0, dtype=np.float64)
        change_std = change.std(axis=0, dtype=np.float64)

        def tensor(value: Any) -> Tensor:
            return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float32)

        return cls(
            center=tensor([config.box_width / 2, config.box_height / 2]),
            length_scale=tensor(2 * config.radius),
            velocity_scale=tensor(_safe_std(velocity_std)),
            target_mean=tensor(change_mean),
            target_std=tensor(_safe_std(change_std)),
            radius_scale=tensor(config.radius),
            frame_interval=float(config.frame_interval),
            history=int(history),
            radius_feature=bool(config.radius_spread > 0),
        )

    @property
    def num_features(self) -> int:
        """F, the number of input features per particle."""
        return 4 + 2 * self.history + int(self.radius_feature)

    def features(
        self,
        positions: Tensor,
        velocities: Tensor,
        radii: Tensor,
        past_velocities: Tensor | None = None,
    ) -> Tensor:
        """Normalised model inputs.

        Args:
            positions: (B, N, 2) raw positions.
            velocities: (B, N, 2) raw velocities.
            radii: (B, N) raw radii.
            past_velocities: (B, history, N, 2) raw velocities of the ``history`` frames
                before, oldest first; required when ``history > 0``.

        Returns:
            (B, N, F) features in the order documented in this module.

        """
        position_features = (positions - self.center.to(positions)) / self.length_scale.to(
            positions
        )
        velocity_scale = self.velocity_scale.to(velocities)
        parts = [position_features, velocities / velocity_scale]
        if self.history > 0:
            if past_velocities is None or past_velocities.shape[-3] != self.history:
                got = None if past_velocities is None else tuple(past_velocities.shape)
                raise ValueError(
                    f"past_velocities must have shape (B, {self.history}, N, 2) with "
                    f"history={self.history}, got {got}"
                )
            past = (past_velocities / velocity_scale).movedim(-3, -2)  # (B, N, history, 2)
            parts.append(past.flatten(-2))  # (B, N, 2*history)
        if self.radius_feature:
            parts.append((radii / self.radius_scale.to(radii)).unsqueeze(-1))  # (B, N, 1)
        return torch.cat(parts, dim=-1)

    def normalize_target(self, velocity_change: Tensor) -> Tensor:
        """Standardise a raw velocity change (..., 2) over one frame interval."""
        return (velocity_change - self.target_mean.to(velocity_change)) / self.target_std.to(
            velocity_change
        )

    def denormalize_target(self, target: Tensor) -> Tensor:
        """Raw velocity change (..., 2) from a normalised target."""
        return target * self.target_std.to(target) + self.target_mean.to(target)

    def advance(
        self, positions: Tensor, velocities: Tensor, predicted_target: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Step a state one frame ahead with a predicted (normalised) velocity change.

        ``v' = v + dv`` and ``x' = x + frame_interval * (v + v') / 2``, i.e. constant
        acceleration over the frame (exact in free fall).

        Args:
            positions: (B, N, 2) raw positions.
            velocities: (B, N, 2) raw velocities.
            predicted_target: (B, N, 2) normalised velocity change.

        Returns:
            The next raw positions and velocities, each (B, N, 2).

        """
        next_velocities = velocities + self.denormalize_target(predicted_target)
        next_positions = positions + self.frame_interval * 0.5 * (velocities + next_velocities)
        return next_positions, next_velocities

    def _map_tensors(self, function: Any) -> dict[str, Any]:
        """Field values by name, with ``function`` applied to the tensor ones."""
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            values[field.name] = function(value) if isinstance(value, Tensor) else value
        return values

    def to(self, device: torch.device | str) -> FeatureNormalizer:
        """Return a copy with every tensor on ``device``."""
        return FeatureNormalizer(**self._map_tensors(lambda tensor: tensor.to(device)))

    def state_dict(self) -> dict[str, Any]:
        """Plain dict of tensors (on CPU) and numbers, for checkpoints."""
        return self._map_tensors(lambda tensor: tensor.detach().cpu().clone())

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FeatureNormalizer:
        """Inverse of :meth:`state_dict`."""
        names = {field.name for field in fields(cls)}
        if set(state) != names:
            raise ValueError(
                f"normalizer state must have exactly the keys {sorted(names)}, got {sorted(state)}"
            )
        values = {
            name: torch.as_tensor(state[name], dtype=torch.float32).clone()
            for name in _TENSOR_FIELDS
        }
        return cls(
            **values,
            frame_interval=float(state["frame_interval"]),
            history=int(state["history"]),
            radius_feature=bool(state["radius_feature"]),
        )
