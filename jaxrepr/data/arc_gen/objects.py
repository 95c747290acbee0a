"""Object-level ARC-like families: connected shapes that are selected, recoloured, hollowed, filled,
counted or framed. Objects are 4-connected and separated by at least one black cell."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from jaxrepr.data.arc_gen.base import (
  Generator,
  Retry,
  colours,
  components,
  count,
  family,
  place,
  side,
  sprite,
)

FAMILIES: dict[str, Generator] = {}


def _scene(rng, d, lo_objects=2, hi_objects=8, max_obj=6, palette_size=3, lo_side=6, exclude=()):
  """A black grid with several separated sprites; returns (grid, number placed)."""
  h, w = side(rng, d, lo_side, 30), side(rng, d, lo_side, 30)
  g = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  palette = colours(rng, palette_size, exclude=exclude)
  placed = 0
  for _ in range(count(rng, d, lo_objects, hi_objects)):
    oh, ow = int(rng.integers(1, min(max_obj, h) + 1)), int(rng.integers(1, min(max_obj, w) + 1))
    if place(rng, g, occupied, sprite(rng, oh, ow, int(rng.choice(palette)))) is not None:
      placed += 1
  return g, placed


def _sizes(labels: np.ndarray, n: int) -> np.ndarray:
  return np.bincount(labels.reshape(-1), minlength=n + 1)[1:]


def _largest(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mask of the unique largest object and its labels; Retry when the largest is tied."""
  labels, n = components(g)
  if n < 2:
    raise Retry
  sizes = _sizes(labels, n)
  top = np.sort(sizes)[-2:]
  if top[0] == top[1]:
    raise Retry
  return labels == int(np.argmax(sizes)) + 1, labels


@family(FAMILIES, "largest_object_crop")
def _largest_crop(rng, p, d):
  """Cut out the bounding box of the largest object."""
  g, _ = _scene(rng, d)
  mask, _ = _largest(g)
  sl = ndimage.find_objects(mask.astype(np.int32))[0]
  return g, np.where(mask, g, 0)[sl].astype(np.int32)


@family(FAMILIES, "keep_largest")
def _keep_largest(rng, p, d):
  """Erase every object but the largest."""
  g, _ = _scene(rng, d)
  mask, _ = _largest(g)
  return g, np.where(mask, g, 0).astype(np.int32)


def _size_map_params(rng, difficulty):
  return {"by_size": colours(rng, 4)}


@family(FAMILIES, "recolour_by_size", _size_map_params)
def _recolour_by_size(rng, p, d):
  """Objects of 1, 2, 3 and 4+ cells take the task's four colours."""
  h, w = side(rng, d, 5, 30), side(rng, d, 5, 30)
  g = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  grey = int(colours(rng, 1, exclude=tuple(int(c) for c in p["by_size"]))[0])
  for _ in range(count(rng, d, 2, 14)):
    oh, ow = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    place(rng, g, occupied, sprite(rng, oh, ow, grey))
  labels, n = components(g)
  if n == 0:
    raise Retry
  sizes = np.minimum(_sizes(labels, n), 4)
  out = np.where(labels > 0, p["by_size"][sizes[labels - 1] - 1], 0)
  return g, out.astype(np.int32)


def _hollow_params(rng, difficulty):
  return {"inner": int(rng.choice([0, int(colours(rng, 1)[0])]))}


def _rect_scene(rng, d, filled: bool, exclude=()):
  h, w = side(rng, d, 6, 30), side(rng, d, 6, 30)
  g = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  palette = colours(rng, 3, exclude=exclude)
  interiors = []
  for _ in range(count(rng, d, 1, 6)):
    rh, rw = int(rng.integers(3, min(9, h) + 1)), int(rng.integers(3, min(9, w) + 1))
    patch = np.full((rh, rw), rng.choice(palette), np.int32)
    if not filled:
      patch[1:-1, 1:-1] = 0
    at = place(rng, g, occupied, patch)
    if at is not None:
      interiors.append((slice(at[0] + 1, at[0] + rh - 1), slice(at[1] + 1, at[1] + rw - 1)))
  if not interiors:
    raise Retry
  return g, interiors


@family(FAMILIES, "hollow_rects", _hollow_params)
def _hollow(rng, p, d):
  """Filled rectangles keep only their border; the inside becomes the task's colour (or black)."""
  g, interiors = _rect_scene(rng, d, filled=True, exclude=(p["inner"],))
  out = g.copy()
  for sl in interiors:
    out[sl] = p["inner"]
  return g, out


@family(FAMILIES, "fill_enclosed", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _fill_enclosed(rng, p, d):
  """Black cells enclosed by a rectangle outline are filled with colour c."""
  g, interiors = _rect_scene(rng, d, filled=False, exclude=(p["c"],))
  out = g.copy()
  for sl in interiors:
    out[sl] = p["c"]
  return g, out


@family(
  FAMILIES,
  "count_objects",
  lambda rng, d: {"c": int(colours(rng, 1)[0]), "vertical": bool(rng.integers(2))},
)
def _count_objects(rng, p, d):
  """Output a bar of colour c whose length is the number of objects."""
  g, _ = _scene(rng, d, 1, 9, max_obj=4, lo_side=4)
  _, n = components(g)
  if n == 0:
    raise Retry
  return g, np.full((n, 1) if p["vertical"] else (1, n), p["c"], np.int32)


@family(FAMILIES, "ring_pixels", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _ring_pixels(rng, p, d):
  """Each lone pixel gets a 3x3 ring of colour c around it."""
  h, w = side(rng, d, 5, 30), side(rng, d, 5, 30)
  g = np.zeros((h, w), np.int32)
  out = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  palette = colours(rng, 2, exclude=(p["c"],))
  ring = np.full((3, 3), p["c"], np.int32)
  for _ in range(count(rng, d, 1, 10)):
    centre = int(rng.choice(palette))
    ring[1, 1] = centre
    at = place(rng, out, occupied, ring)
    if at is not None:
      g[at[0] + 1, at[1] + 1] = centre
  if not g.any():
    raise Retry
  return g, out


@family(FAMILIES, "bounding_box", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _bounding_box(rng, p, d):
  """Black cells inside each object's bounding box take colour c."""
  g, _ = _scene(rng, d, max_obj=6, palette_size=2, exclude=(p["c"],))
  labels, n = components(g)
  out = g.copy()
  for sl in ndimage.find_objects(labels):
    box = out[sl]
    box[box == 0] = p["c"]
  if n == 0 or (out == g).all():
    raise Retry
  return g, out


@family(FAMILIES, "colour_largest", lambda rng, d: {"c": int(colours(rng, 1)[0])})
def _colour_largest(rng, p, d):
  """The largest object takes colour c; the others keep theirs."""
  g, _ = _scene(rng, d, palette_size=2, exclude=(p["c"],))
  mask, _ = _largest(g)
  return g, np.where(mask, p["c"], g).astype(np.int32)
