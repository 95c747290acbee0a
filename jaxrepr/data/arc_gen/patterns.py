"""Line and pattern ARC-like families: rays from dots, crosses, diagonals, joining dots, symmetry
completion, boolean logic of two halves, sorting bars, frames and periodic continuation."""

from __future__ import annotations

import numpy as np

from jaxrepr.data.arc_gen.base import (
  Generator,
  Retry,
  apply_down,
  colours,
  count,
  dense_grid,
  family,
  noise_grid,
  side,
)

FAMILIES: dict[str, Generator] = {}


def _dots(rng, h, w, n, palette, distinct_rows=False, distinct_cols=False):
  """n dots at distinct cells (optionally distinct rows / columns) with colours from `palette`."""
  n = min(n, h if distinct_rows else h * w, w if distinct_cols else h * w)
  rows = rng.choice(h, n, replace=False) if distinct_rows else None
  cols = rng.choice(w, n, replace=False) if distinct_cols else None
  if rows is None or cols is None:
    cells = rng.choice(h * w, n, replace=False)
    rows = cells // w if rows is None else rows
    cols = cells % w if cols is None else cols
  return rows, cols, rng.choice(palette, n)


def _ray_down(g: np.ndarray) -> np.ndarray:
  """Each coloured cell paints the cells below it in its colour (the lowest dot of a column
  wins)."""
  out = g.copy()
  for i in range(1, g.shape[0]):
    out[i] = np.where(g[i] != 0, g[i], out[i - 1])
  return out


@family(FAMILIES, "rays", lambda rng, d: {"dir": ("down", "up", "left", "right")[rng.integers(4)]})
def _rays(rng, p, d):
  """Every dot shoots a ray of its colour to one edge of the grid."""
  h, w = side(rng, d, 3, 30), side(rng, d, 3, 30)
  g = np.zeros((h, w), np.int32)
  along_cols = p["dir"] in ("down", "up")
  r, c, col = _dots(
    rng,
    h,
    w,
    count(rng, d, 1, 8),
    colours(rng, 3),
    distinct_rows=not along_cols,
    distinct_cols=along_cols,
  )
  g[r, c] = col
  return g, apply_down(g, p["dir"], _ray_down)


@family(FAMILIES, "crosses")
def _crosses(rng, p, d):
  """Each dot paints its whole row and column in its colour (rows first, then columns)."""
  h, w = side(rng, d, 3, 30), side(rng, d, 3, 30)
  g = np.zeros((h, w), np.int32)
  r, c, col = _dots(rng, h, w, count(rng, d, 1, 4), colours(rng, 3), True, True)
  g[r, c] = col
  out = np.zeros_like(g)
  out[r, :] = col[:, None]
  out[:, c] = col[None, :]
  return g, out


@family(
  FAMILIES,
  "diagonals",
  lambda rng, d: {"dr": int(rng.choice([-1, 1])), "dc": int(rng.choice([-1, 1]))},
)
def _diagonals(rng, p, d):
  """Each dot extends a diagonal ray in the task's direction until the edge."""
  h, w = side(rng, d, 3, 30), side(rng, d, 3, 30)
  g = np.zeros((h, w), np.int32)
  r, c, col = _dots(rng, h, w, count(rng, d, 1, 4), colours(rng, 2))
  g[r, c] = col
  out = g.copy()
  for r0, c0, k in zip(r, c, col):
    i, j = r0 + p["dr"], c0 + p["dc"]
    while 0 <= i < h and 0 <= j < w:
      if out[i, j] == 0:  # rays never overwrite, so the result does not depend on drawing order
        out[i, j] = k
      i, j = i + p["dr"], j + p["dc"]
  # when two rays meet, "first drawn wins" would be order-dependent; reject such layouts
  probe = g.copy()
  for r0, c0, k in list(zip(r, c, col))[::-1]:
    i, j = r0 + p["dr"], c0 + p["dc"]
    while 0 <= i < h and 0 <= j < w:
      if probe[i, j] == 0:
        probe[i, j] = k
      i, j = i + p["dr"], j + p["dc"]
  if not (probe == out).all():
    raise Retry
  return g, out


@family(FAMILIES, "connect_pairs", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _connect_pairs(rng, p, d):
  """Two dots of the same colour in one row are joined by a line of colour c."""
  h, w = side(rng, d, 3, 30), side(rng, d, 5, 30)
  g = np.zeros((h, w), np.int32)
  out = g.copy()
  palette = colours(rng, 3, exclude=(p["c"],))
  for row in rng.choice(h, min(h, count(rng, d, 1, 8)), replace=False):
    a, b = np.sort(rng.choice(w, 2, replace=False))
    if b - a < 2:
      continue
    k = rng.choice(palette)
    g[row, [a, b]] = k
    out[row, a + 1 : b] = p["c"]
    out[row, [a, b]] = k
  if not g.any():
    raise Retry
  return g, out


@family(
  FAMILIES, "symmetry_complete", lambda rng, d: {"axis": ("lr", "ud", "both")[rng.integers(3)]}
)
def _symmetry_complete(rng, p, d):
  """A symmetric picture with a black hole; the output restores the hidden cells."""
  h, w = side(rng, d, 4, 30), side(rng, d, 4, 30)
  full = np.array(rng.choice(colours(rng, count(rng, d, 2, 5)), size=(h, w)), np.int32)
  if p["axis"] in ("lr", "both"):
    full[:, w - w // 2 :] = np.flip(full[:, : w // 2], 1)
  if p["axis"] in ("ud", "both"):
    full[h - h // 2 :, :] = np.flip(full[: h // 2, :], 0)
  hh, hw = int(rng.integers(1, max(2, h // 3) + 1)), int(rng.integers(1, max(2, w // 3) + 1))
  r, c = int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - hw + 1))
  g = full.copy()
  g[r : r + hh, c : c + hw] = 0
  # the hole must not cover a cell and its mirror image, or the output is not determined
  mirror = g.copy()
  if p["axis"] in ("lr", "both"):
    mirror = np.maximum(mirror, np.flip(g, 1))
  if p["axis"] in ("ud", "both"):
    mirror = np.maximum(mirror, np.flip(mirror, 0))
  if (mirror == 0).any():
    raise Retry
  return g, full


_OPS = {
  "and": np.logical_and,
  "or": np.logical_or,
  "xor": np.logical_xor,
  "nor": lambda a, b: ~(a | b),
}


def _logic_params(rng, difficulty):
  a, b, c, div = colours(rng, 4)
  return {
    "op": tuple(_OPS)[rng.integers(len(_OPS))],
    "a": int(a),
    "b": int(b),
    "c": int(c),
    "div": int(div),
    "vertical": bool(rng.integers(2)),
  }


@family(FAMILIES, "logic_halves", _logic_params)
def _logic_halves(rng, p, d):
  """Two masks split by a divider line; the output marks cells where op(mask1, mask2) holds."""
  h, w = side(rng, d, 2, 14), side(rng, d, 2, 30)
  m1, m2 = rng.random((h, w)) < 0.5, rng.random((h, w)) < 0.5
  div = np.full((1, w), p["div"], np.int32)
  g = np.concatenate([np.where(m1, p["a"], 0), div, np.where(m2, p["b"], 0)], 0).astype(np.int32)
  out = np.where(_OPS[p["op"]](m1, m2), p["c"], 0).astype(np.int32)
  if p["vertical"]:
    return g.T.copy(), out.T.copy()
  return g, out


@family(FAMILIES, "sort_bars", lambda rng, d: {"descending": bool(rng.integers(2))})
def _sort_bars(rng, p, d):
  """Vertical bars standing on the bottom edge are reordered by height."""
  h, n = side(rng, d, 3, 30), side(rng, d, 2, 15)
  heights = rng.integers(0, h + 1, size=n)
  cols = rng.choice(colours(rng, 3), size=n)

  def draw(hs, cs):
    g = np.zeros((h, 2 * n - 1), np.int32)
    for k, (ht, cc) in enumerate(zip(hs, cs)):
      g[h - ht :, 2 * k] = cc if ht else 0
    return g

  order = np.argsort(-heights if p["descending"] else heights, kind="stable")
  return draw(heights, cols), draw(heights[order], cols[order])


@family(FAMILIES, "frame", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _frame(rng, p, d):
  """The outermost ring of cells takes colour c."""
  g = dense_grid(rng, side(rng, d, 3, 30), side(rng, d, 3, 30), d)
  out = g.copy()
  out[[0, -1], :] = p["c"]
  out[:, [0, -1]] = p["c"]
  return g, out


@family(FAMILIES, "continue_pattern", lambda rng, d: {"axis": int(rng.integers(2))})
def _continue_pattern(rng, p, d):
  """A periodic stripe pattern is shown only at the start; the output continues it to the end."""
  h, w = side(rng, d, 2, 30), side(rng, d, 6, 30)
  period = int(rng.integers(2, max(3, w // 3) + 1))
  tile = noise_grid(rng, h, period, 0.7, colours(rng, count(rng, d, 2, 4)))
  reps = -(-w // period)
  full = np.tile(tile, (1, reps))[:, :w]
  shown = int(rng.integers(period + 1, min(w, 2 * period + 1) + 1)) if 2 * period < w else w - 1
  g = full.copy()
  g[:, shown:] = 0
  if p["axis"]:
    return g.T.copy(), full.T.copy()
  return g, full
