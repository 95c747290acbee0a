"""Colour ARC-like families: colour maps, swaps, removal, counting, majority colour, denoising."""

from __future__ import annotations

import numpy as np

from jaxrepr.data.arc_gen.base import (
  Generator,
  Retry,
  colours,
  count,
  family,
  noise_grid,
  place,
  side,
)

FAMILIES: dict[str, Generator] = {}


def _perm_params(rng, difficulty):
  perm = np.arange(10)
  moved = colours(rng, int(rng.integers(2, 10)))
  perm[moved] = rng.permutation(moved)
  if (perm == np.arange(10)).all():
    perm[moved[0]], perm[moved[1]] = moved[1], moved[0]
  return {"perm": perm}


@family(FAMILIES, "colour_map", _perm_params)
def _colour_map(rng, p, d):
  """A fixed permutation of colours 1..9 (black stays black)."""
  palette = colours(rng, count(rng, d, 2, 6))
  g = noise_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.4, 0.9), palette)
  return g, p["perm"][g].astype(np.int32)


def _one_colour(rng, difficulty):
  return {"c": int(colours(rng, 1)[0])}


def _two_colours(rng, difficulty):
  a, b = colours(rng, 2)
  return {"a": int(a), "b": int(b)}


@family(FAMILIES, "recolour_all", _one_colour)
def _recolour_all(rng, p, d):
  """Every coloured cell takes colour c."""
  palette = colours(rng, count(rng, d, 1, 4), exclude=(p["c"],))
  g = noise_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.2, 0.7), palette)
  return g, np.where(g != 0, p["c"], 0).astype(np.int32)


@family(FAMILIES, "swap_colours", _two_colours)
def _swap_colours(rng, p, d):
  """Colours a and b trade places; other colours stay."""
  extra = colours(rng, count(rng, d, 0, 3), exclude=(p["a"], p["b"]))
  palette = np.concatenate([[p["a"], p["b"]], extra])
  g = noise_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.4, 0.9), palette)
  out = g.copy()
  out[g == p["a"]], out[g == p["b"]] = p["b"], p["a"]
  return g, out


@family(FAMILIES, "remove_colour", _one_colour)
def _remove_colour(rng, p, d):
  """Cells of colour c become black."""
  palette = np.concatenate([[p["c"]], colours(rng, count(rng, d, 1, 3), exclude=(p["c"],))])
  g = noise_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.3, 0.8), palette)
  return g, np.where(g == p["c"], 0, g).astype(np.int32)


@family(FAMILIES, "fill_background", _one_colour)
def _fill_background(rng, p, d):
  """Black cells take colour c."""
  palette = colours(rng, count(rng, d, 1, 3), exclude=(p["c"],))
  g = noise_grid(rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.1, 0.6), palette)
  return g, np.where(g == 0, p["c"], g).astype(np.int32)


@family(FAMILIES, "invert", _one_colour)
def _invert(rng, p, d):
  """A two-colour grid (black and c): black and c swap."""
  g = noise_grid(
    rng, side(rng, d, 2, 30), side(rng, d, 2, 30), rng.uniform(0.2, 0.8), np.array([p["c"]])
  )
  return g, np.where(g == 0, p["c"], 0).astype(np.int32)


@family(FAMILIES, "checker_recolour", _one_colour)
def _checker_recolour(rng, p, d):
  """Coloured cells on the (i + j) even squares of a checkerboard take colour c."""
  palette = colours(rng, count(rng, d, 1, 3), exclude=(p["c"],))
  h, w = side(rng, d, 2, 30), side(rng, d, 2, 30)
  g = noise_grid(rng, h, w, rng.uniform(0.3, 0.9), palette)
  even = (np.add.outer(np.arange(h), np.arange(w)) % 2) == 0
  return g, np.where(even & (g != 0), p["c"], g).astype(np.int32)


def _size_params(rng, difficulty):
  return {"n": int(rng.integers(1, 4))}


@family(FAMILIES, "majority_colour", _size_params)
def _majority_colour(rng, p, d):
  """An n x n grid filled with the most frequent non-black colour of the input."""
  h, w = side(rng, d, 3, 30), side(rng, d, 3, 30)
  k = count(rng, d, 2, 5)
  palette = colours(rng, k)
  cells = h * w
  # distinct counts make the majority unique
  counts = np.sort(
    rng.choice(np.arange(1, max(k + 1, cells // (k + 1)) + 1), size=k, replace=False)
  )
  if counts.sum() > cells:
    raise Retry
  flat = np.zeros(cells, np.int32)
  flat[: counts.sum()] = np.repeat(palette, counts)
  g = rng.permutation(flat).reshape(h, w)
  return g, np.full((p["n"], p["n"]), palette[-1], np.int32)


def _bar_params(rng, difficulty):
  return {"c": int(colours(rng, 1)[0]), "vertical": bool(rng.integers(2))}


@family(FAMILIES, "count_to_bar", _bar_params)
def _count_to_bar(rng, p, d):
  """Count the cells of colour c; output a bar of that length in colour c (row or column)."""
  h, w = side(rng, d, 3, 30), side(rng, d, 3, 30)
  n = int(rng.integers(1, min(h * w // 2, count(rng, d, 3, 30)) + 1))
  others = colours(rng, count(rng, d, 0, 3), exclude=(p["c"],))
  g = (
    noise_grid(rng, h, w, rng.uniform(0.0, 0.4), others)
    if len(others)
    else np.zeros((h, w), np.int32)
  )
  idx = rng.choice(h * w, size=n, replace=False)
  g.reshape(-1)[idx] = p["c"]
  bar = np.full((n, 1) if p["vertical"] else (1, n), p["c"], np.int32)
  return g, bar


@family(FAMILIES, "denoise", _one_colour)
def _denoise(rng, p, d):
  """Rectangles sit under scattered pixels of noise colour c; the output removes the noise."""
  h, w = side(rng, d, 6, 30), side(rng, d, 6, 30)
  out = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  palette = colours(rng, 3, exclude=(p["c"],))
  for _ in range(count(rng, d, 1, 6)):
    rh, rw = int(rng.integers(2, max(3, h // 2))), int(rng.integers(2, max(3, w // 2)))
    place(rng, out, occupied, np.full((rh, rw), rng.choice(palette), np.int32))
  noise = (rng.random((h, w)) < rng.uniform(0.03, 0.12)) & (out == 0)
  if not noise.any() or not out.any():
    raise Retry
  return np.where(noise, p["c"], out).astype(np.int32), out
