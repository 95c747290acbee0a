"""The generator type and the drawing helpers shared by every ARC-like family.

A family is split in two so that a task has one program: `sample_params(rng, difficulty)` draws the
hidden parameters of the task (a colour map, a flip axis, a shift...), and
`sample_pair(rng, params, difficulty)` draws one (input, output) pair of that program. Calling a
`Generator` as `gen(rng, difficulty)` does both (a one-pair task). Difficulty in [0, 1] scales grid
sizes and object counts; 0 gives the smallest grids of a family.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import numpy as np
from scipy import ndimage

Params = dict[str, Any]
Pair = tuple[np.ndarray, np.ndarray]
MAX_SIDE = 30


@dataclasses.dataclass(frozen=True)
class Generator:
  name: str
  sample_params: Callable[[np.random.Generator, float], Params]
  sample_pair: Callable[[np.random.Generator, Params, float], Pair]
  doc: str = ""
  # True: both functions also take `max_rows=`, `max_cols=` keywords (the limit make_task enforces),
  # for a family whose programs change grid sizes by different factors (compose.py).
  sized: bool = False

  def __call__(self, rng: np.random.Generator, difficulty: float) -> Pair:
    return self.sample_pair(rng, self.sample_params(rng, difficulty), difficulty)


def family(registry: dict[str, Generator], name: str, sample_params: Callable | None = None):
  """Decorator registering `sample_pair` under `name`; the function docstring is the family's
  doc."""

  def wrap(sample_pair):
    params = sample_params or (lambda rng, difficulty: {})
    registry[name] = Generator(name, params, sample_pair, (sample_pair.__doc__ or "").strip())
    return sample_pair

  return wrap


def side(rng: np.random.Generator, difficulty: float, lo: int, hi: int) -> int:
  """A side length in lo..lo + difficulty * (hi - lo)."""
  hi = max(lo, min(hi, MAX_SIDE))
  top = lo + int(round(float(np.clip(difficulty, 0.0, 1.0)) * (hi - lo)))
  return int(rng.integers(lo, top + 1))


def count(rng: np.random.Generator, difficulty: float, lo: int, hi: int) -> int:
  return side(rng, difficulty, lo, hi)


def colours(rng: np.random.Generator, k: int, exclude: tuple[int, ...] = ()) -> np.ndarray:
  """k distinct colours from 1..9 minus `exclude`."""
  pool = np.array([c for c in range(1, 10) if c not in exclude])
  return rng.choice(pool, size=k, replace=False)


def noise_grid(
  rng: np.random.Generator, h: int, w: int, density: float, palette: np.ndarray
) -> np.ndarray:
  """Black grid where each cell is, with probability `density`, a colour drawn from `palette`."""
  cells = rng.choice(palette, size=(h, w))
  return np.where(rng.random((h, w)) < density, cells, 0).astype(np.int32)


def dense_grid(rng: np.random.Generator, h: int, w: int, difficulty: float) -> np.ndarray:
  """A random grid with 2..6 colours at density 0.3..0.8: a generic input for geometric maps."""
  palette = colours(rng, count(rng, difficulty, 2, 6))
  return noise_grid(rng, h, w, rng.uniform(0.3, 0.8), palette)


def sprite(rng: np.random.Generator, h: int, w: int, colour: int) -> np.ndarray:
  """A 4-connected random shape inside an h x w box that touches all four sides of the box."""
  for _ in range(20):
    mask = rng.random((h, w)) < 0.7
    labels, n = ndimage.label(mask)
    if n == 0:
      continue
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    keep = labels == (int(np.argmax(sizes)) + 1)
    rows, cols = np.nonzero(keep)
    if rows.min() == 0 and cols.min() == 0 and rows.max() == h - 1 and cols.max() == w - 1:
      return np.where(keep, colour, 0).astype(np.int32)
  return np.full((h, w), colour, np.int32)  # a filled box is a valid (if plain) sprite


def place(
  rng: np.random.Generator,
  grid: np.ndarray,
  occupied: np.ndarray,
  patch: np.ndarray,
  margin: int = 1,
  tries: int = 30,
  border: int = 0,
) -> tuple[int, int] | None:
  """Writes `patch` (non-zero cells) at a random free spot with `margin` empty cells around it.

  `occupied` is updated in place; returns the top-left corner or None if nothing fitted.
  """
  h, w = grid.shape
  ph, pw = patch.shape
  if ph + 2 * border > h or pw + 2 * border > w:
    return None
  for _ in range(tries):
    r = int(rng.integers(border, h - ph - border + 1))
    c = int(rng.integers(border, w - pw - border + 1))
    r0, c0 = max(0, r - margin), max(0, c - margin)
    if occupied[r0 : r + ph + margin, c0 : c + pw + margin].any():
      continue
    region = grid[r : r + ph, c : c + pw]
    region[patch != 0] = patch[patch != 0]
    occupied[r : r + ph, c : c + pw] = True
    return r, c
  return None


def components(grid: np.ndarray) -> tuple[np.ndarray, int]:
  """4-connected components of non-zero cells (any colours touching form one object)."""
  return ndimage.label(grid != 0)


def apply_down(
  grid: np.ndarray, direction: str, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
  """Applies a 'downward' operation `fn` in any of four directions by rotating there and back."""
  k = {"down": 0, "right": 3, "up": 2, "left": 1}[direction]
  # rot90 by k (counter-clockwise) maps the chosen direction onto 'down'.
  return np.rot90(fn(np.rot90(grid, k)), -k).copy()


class Retry(Exception):
  """Raised by a sample_pair that drew an unusable layout; `make_task` draws again."""
