"""ARC augmentation: one of the 8 dihedral maps and a permutation of colours 1..9 (0 fixed), the
same transform for every pair of a task and both grids of a pair (see jaxrepr/data/arc.py).

Dihedral index t: rotate clockwise by 90 * (t % 4) degrees, after a transpose when t >= 4. The LPN
reference code uses rot90 + colour permutation only (`dihedral='rot90'`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxrepr.errors import ConfigError

Pair = tuple[np.ndarray, np.ndarray]
DIHEDRAL_MODES = {"none": (0,), "rot90": (0, 1, 2, 3), "all": tuple(range(8))}


@dataclasses.dataclass(frozen=True)
class Augmentation:
  dihedral: int = 0  # 0..7, see the module docstring
  perm: tuple[int, ...] = tuple(range(10))  # perm[c] = new colour of c; perm[0] = 0


def sample_augmentation(
  rng: np.random.Generator, dihedral: str = "rot90", colour_permutation: bool = True
) -> Augmentation:
  if dihedral not in DIHEDRAL_MODES:
    raise ConfigError(f"config.data.dihedral={dihedral!r} must be one of {sorted(DIHEDRAL_MODES)}")
  options = DIHEDRAL_MODES[dihedral]
  t = int(options[rng.integers(len(options))])
  perm = tuple(range(10))
  if colour_permutation:
    perm = (0,) + tuple(int(c) for c in 1 + rng.permutation(9))
  return Augmentation(t, perm)


def dihedral_transform(grid: np.ndarray, t: int) -> np.ndarray:
  g = grid.T if t >= 4 else grid
  return np.rot90(g, -(t % 4))  # negative k: clockwise, as in the reference code


def inverse_dihedral(grid: np.ndarray, t: int) -> np.ndarray:
  g = np.rot90(grid, t % 4)
  return g.T if t >= 4 else g


def augment_grid(grid: np.ndarray, aug: Augmentation) -> np.ndarray:
  return np.ascontiguousarray(
    np.asarray(aug.perm, np.int32)[dihedral_transform(grid, aug.dihedral)]
  )


def invert_grid(grid: np.ndarray, aug: Augmentation) -> np.ndarray:
  inverse_perm = np.argsort(np.asarray(aug.perm)).astype(np.int32)
  return np.ascontiguousarray(inverse_dihedral(inverse_perm[grid], aug.dihedral))


def augment_pairs(pairs: Sequence[Pair], aug: Augmentation) -> list[Pair]:
  """The same transform on every pair and on both grids of each pair."""
  return [(augment_grid(i, aug), augment_grid(o, aug)) for i, o in pairs]
