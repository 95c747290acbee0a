"""Geometric ARC-like families: dihedral maps, scaling, tiling, mirroring, gravity, shifts,
crops."""

from __future__ import annotations

import numpy as np

from jaxrepr.data.arc_gen.base import (
  Generator,
  Retry,
  apply_down,
  colours,
  dense_grid,
  family,
  noise_grid,
  side,
  sprite,
)

FAMILIES: dict[str, Generator] = {}


def _choice(options):
  return lambda rng, difficulty: {"v": options[int(rng.integers(len(options)))]}


@family(FAMILIES, "flip", _choice((0, 1)))
def _flip(rng, p, d):
  """Mirror the grid top-bottom (axis 0) or left-right (axis 1)."""
  g = dense_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), d)
  return g, np.flip(g, p["v"]).copy()


@family(FAMILIES, "rotate", _choice((1, 2, 3)))
def _rotate(rng, p, d):
  """Rotate clockwise by 90, 180 or 270 degrees."""
  g = dense_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), d)
  return g, np.rot90(g, -p["v"]).copy()


@family(FAMILIES, "transpose", _choice(("main", "anti")))
def _transpose(rng, p, d):
  """Reflect across the main or the anti-diagonal."""
  g = dense_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), d)
  out = g.T if p["v"] == "main" else np.rot90(g, 2).T
  return g, out.copy()


@family(FAMILIES, "scale_up", _choice((2, 3)))
def _scale_up(rng, p, d):
  """Every cell becomes an f x f block."""
  f = p["v"]
  g = dense_grid(rng, side(rng, d, 2, 30 // f), side(rng, d, 2, 30 // f), d)
  return g, np.kron(g, np.ones((f, f), np.int32))


@family(FAMILIES, "scale_down", _choice((2, 3)))
def _scale_down(rng, p, d):
  """The input is made of f x f blocks; the output has one cell per block."""
  f = p["v"]
  g = dense_grid(rng, side(rng, d, 2, 30 // f), side(rng, d, 2, 30 // f), d)
  return np.kron(g, np.ones((f, f), np.int32)), g


def _tile_params(rng, difficulty):
  reps = [(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if (a, b) != (1, 1)]
  return {"reps": reps[int(rng.integers(len(reps)))], "mirror": bool(rng.integers(2))}


@family(FAMILIES, "tile", _tile_params)
def _tile(rng, p, d):
  """Repeat the grid a x b times; with `mirror`, alternate tiles are flipped (a kaleidoscope)."""
  a, b = p["reps"]
  g = dense_grid(rng, side(rng, d, 2, min(10, 30 // a)), side(rng, d, 2, min(10, 30 // b)), d)
  rows = []
  for i in range(a):
    row = []
    for j in range(b):
      t = g
      if p["mirror"]:
        t = np.flip(t, 0) if i % 2 else t
        t = np.flip(t, 1) if j % 2 else t
      row.append(t)
    rows.append(np.concatenate(row, 1))
  return g, np.concatenate(rows, 0)


@family(FAMILIES, "mirror_concat", _choice(("right", "down", "both")))
def _mirror_concat(rng, p, d):
  """Append the mirror image to the right, below, or both (a 2x2 symmetric grid)."""
  g = dense_grid(rng, side(rng, d, 2, 15), side(rng, d, 2, 15), d)
  right = np.concatenate([g, np.flip(g, 1)], 1)
  if p["v"] == "right":
    return g, right
  if p["v"] == "down":
    return g, np.concatenate([g, np.flip(g, 0)], 0)
  return g, np.concatenate([right, np.flip(right, 0)], 0)


def _fall(g: np.ndarray) -> np.ndarray:
  out = np.zeros_like(g)
  for j in range(g.shape[1]):
    col = g[:, j][g[:, j] != 0]
    if len(col):
      out[-len(col) :, j] = col
  return out


@family(FAMILIES, "gravity", _choice(("down", "up", "left", "right")))
def _gravity(rng, p, d):
  """Every coloured cell falls towards one edge, keeping the order of its column (or row)."""
  g = noise_grid(
    rng,
    side(rng, d, 3, 30),
    side(rng, d, 3, 30),
    rng.uniform(0.15, 0.5),
    colours(rng, int(rng.integers(1, 4))),
  )
  return g, apply_down(g, p["v"], _fall)


def _shift_params(rng, difficulty):
  while True:
    dr, dc = (int(x) for x in rng.integers(-2, 3, size=2))
    if (dr, dc) != (0, 0):
      return {"dr": dr, "dc": dc}


@family(FAMILIES, "shift_wrap", _shift_params)
def _shift_wrap(rng, p, d):
  """Roll the whole grid by (dr, dc), wrapping around the edges."""
  g = dense_grid(rng, side(rng, d, 3, 30), side(rng, d, 3, 30), d)
  return g, np.roll(g, (p["dr"], p["dc"]), (0, 1))


@family(FAMILIES, "translate", _shift_params)
def _translate(rng, p, d):
  """Move all coloured cells by (dr, dc) without wrapping; the content never leaves the grid."""
  h, w = side(rng, d, 5, 30), side(rng, d, 5, 30)
  dr, dc = p["dr"], p["dc"]
  inner = dense_grid(rng, h - abs(dr), w - abs(dc), d)
  g = np.zeros((h, w), np.int32)
  r0, c0 = max(0, -dr), max(0, -dc)
  g[r0 : r0 + inner.shape[0], c0 : c0 + inner.shape[1]] = inner
  out = np.zeros_like(g)
  out[r0 + dr : r0 + dr + inner.shape[0], c0 + dc : c0 + dc + inner.shape[1]] = inner
  return g, out


@family(FAMILIES, "crop_object", _choice((0, 1)))
def _crop_object(rng, p, d):
  """Cut out the bounding box of the one object (with `v` = 1: of the one non-noise colour)."""
  h, w = side(rng, d, 4, 30), side(rng, d, 4, 30)
  oh, ow = side(rng, d, 2, min(h - 1, 8)), side(rng, d, 2, min(w - 1, 8))
  c = colours(rng, 2)
  obj = sprite(rng, oh, ow, int(c[0]))
  g = noise_grid(rng, h, w, 0.1 * p["v"], np.array([c[1]]))
  r, col = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
  g[r : r + oh, col : col + ow] = np.where(obj != 0, obj, 0)
  if not p["v"] and (g != 0).sum() != (obj != 0).sum():
    raise Retry
  return g, obj


@family(FAMILIES, "fractal")
def _fractal(rng, p, d):
  """n x n -> n^2 x n^2: block (i, j) is a copy of the input where input[i, j] is coloured."""
  n = side(rng, d, 2, 5)
  g = noise_grid(rng, n, n, rng.uniform(0.3, 0.7), colours(rng, 1))
  if not g.any():
    raise Retry
  out = np.kron((g != 0).astype(np.int32), np.ones((n, n), np.int32)) * np.tile(g, (n, n))
  return g, out
