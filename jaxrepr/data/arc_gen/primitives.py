"""The primitives the `compose` family chains: total functions grid -> grid with hidden parameters.

Each repeats a single family's transformation where it composes (black, 0, is the background):
  dihedral  flip, rotate, transpose
  colour    colour_map, swap_colours, recolour_all, remove_colour, fill_background
  move      gravity, shift_wrap
  size      scale_up, tile, mirror_concat, crop_content
  object    keep_largest, colour_largest, recolour_by_size, hollow, bounding_boxes (objects are
            4-connected components of non-black cells)
  paint     frame
A primitive says how much it can grow a side (`growth`, so that inputs are sized for the output to
fit), whether it needs an object scene to act (`scene`), and whether it leaves no black background
(`fills`: later steps would have no objects or content left to act on). A primitive that cannot
act on a grid (no object, a tie for the largest) raises `Retry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from jaxrepr.data.arc_gen.base import Params, Retry, apply_down, colours, components


@dataclasses.dataclass(frozen=True)
class Primitive:
  name: str
  group: str
  sample: Callable[[np.random.Generator], Params]
  apply: Callable[[np.ndarray, Params], np.ndarray]
  growth: Callable[[Params], int] = lambda p: 1  # the most one side can be multiplied by
  scene: bool = False  # needs an object scene (objects apart, black around them) to act
  fills: bool = False  # leaves no black background: only the last steps of a program


def _one_of(key, options):
  return lambda rng: {key: options[int(rng.integers(len(options)))]}


def _colour(key="c"):
  return lambda rng: {key: int(colours(rng, 1)[0])}


def _perm(rng):
  perm = np.arange(10)
  moved = colours(rng, int(rng.integers(2, 10)))
  perm[moved] = rng.permutation(moved)
  if (perm == np.arange(10)).all():
    perm[moved[0]], perm[moved[1]] = moved[1], moved[0]
  return {"perm": tuple(int(c) for c in perm)}


def _swap(g, p):
  out = g.copy()
  out[g == p["a"]], out[g == p["b"]] = p["b"], p["a"]
  return out


def _fall(g):
  out = np.zeros_like(g)
  for j in range(g.shape[1]):
    col = g[:, j][g[:, j] != 0]
    if len(col):
      out[len(out) - len(col) :, j] = col
  return out


def _tile(g, p):
  a, b = p["reps"]
  rows = []
  for i in range(a):
    row = []
    for j in range(b):
      t = np.flip(g, 0) if p["mirror"] and i % 2 else g
      row.append(np.flip(t, 1) if p["mirror"] and j % 2 else t)
    rows.append(np.concatenate(row, 1))
  return np.concatenate(rows, 0)


def _mirror(g, p):
  right = np.concatenate([g, np.flip(g, 1)], 1)
  if p["v"] == "right":
    return right
  if p["v"] == "down":
    return np.concatenate([g, np.flip(g, 0)], 0)
  return np.concatenate([right, np.flip(right, 0)], 0)


def _crop_content(g, p):
  rows, cols = np.nonzero(g)
  if not len(rows):
    raise Retry
  return g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _largest_mask(g):
  labels, n = components(g)
  if n < 2:
    raise Retry
  sizes = np.bincount(labels.reshape(-1), minlength=n + 1)[1:]
  top = np.sort(sizes)[-2:]
  if top[0] == top[1]:  # a tie has no "largest": the program would be ambiguous
    raise Retry
  return labels == int(np.argmax(sizes)) + 1


def _by_size(g, p):
  labels, n = components(g)
  if n == 0:
    raise Retry
  sizes = np.minimum(np.bincount(labels.reshape(-1), minlength=n + 1)[1:], 4)
  return np.where(labels > 0, np.asarray(p["by_size"])[sizes[labels - 1] - 1], 0)


def _hollow(g, p):
  """Cells of an object whose four neighbours all belong to objects become black."""
  filled = np.pad(g != 0, 1)
  interior = (
    filled[1:-1, 1:-1] & filled[:-2, 1:-1] & filled[2:, 1:-1] & filled[1:-1, :-2] & filled[1:-1, 2:]
  )
  return np.where(interior, 0, g)


def _boxes(g, p):
  labels, _ = components(g)
  out = g.copy()
  for sl in ndimage.find_objects(labels):
    box = out[sl]
    box[box == 0] = p["c"]
  return out


def _frame(g, p):
  out = g.copy()
  out[[0, -1], :] = p["c"]
  out[:, [0, -1]] = p["c"]
  return out


PRIMITIVES: dict[str, Primitive] = {
  p.name: p
  for p in [
    Primitive("flip", "dihedral", _one_of("axis", (0, 1)), lambda g, p: np.flip(g, p["axis"])),
    Primitive("rotate", "dihedral", _one_of("k", (1, 2, 3)), lambda g, p: np.rot90(g, -p["k"])),
    Primitive(
      "transpose",
      "dihedral",
      _one_of("v", ("main", "anti")),
      lambda g, p: g.T if p["v"] == "main" else np.rot90(g, 2).T,
    ),
    Primitive("colour_map", "colour", _perm, lambda g, p: np.asarray(p["perm"])[g]),
    Primitive(
      "swap_colours", "colour", lambda rng: dict(zip("ab", map(int, colours(rng, 2)))), _swap
    ),
    Primitive("recolour_all", "colour", _colour(), lambda g, p: np.where(g != 0, p["c"], 0)),
    Primitive("remove_colour", "colour", _colour(), lambda g, p: np.where(g == p["c"], 0, g)),
    Primitive(
      "fill_background",
      "colour",
      _colour(),
      lambda g, p: np.where(g == 0, p["c"], g),
      fills=True,
    ),
    Primitive(
      "gravity",
      "move",
      _one_of("dir", ("down", "up", "left", "right")),
      lambda g, p: apply_down(g, p["dir"], _fall),
    ),
    Primitive(
      "shift_wrap",
      "move",
      lambda rng: dict(zip(("dr", "dc"), _nonzero_shift(rng))),
      lambda g, p: np.roll(g, (p["dr"], p["dc"]), (0, 1)),
    ),
    Primitive(
      "scale_up",
      "size",
      _one_of("f", (2, 3)),
      lambda g, p: np.kron(g, np.ones((p["f"], p["f"]), g.dtype)),
      lambda p: p["f"],
    ),
    Primitive(
      "tile",
      "size",
      lambda rng: {
        "reps": ((1, 2), (2, 1), (2, 2))[int(rng.integers(3))],
        "mirror": bool(rng.integers(2)),
      },
      _tile,
      lambda p: max(p["reps"]),
    ),
    Primitive(
      "mirror_concat", "size", _one_of("v", ("right", "down", "both")), _mirror, lambda p: 2
    ),
    Primitive("crop_content", "size", lambda rng: {}, _crop_content, scene=True),
    Primitive(
      "keep_largest",
      "object",
      lambda rng: {},
      lambda g, p: np.where(_largest_mask(g), g, 0),
      scene=True,
    ),
    Primitive(
      "colour_largest",
      "object",
      _colour(),
      lambda g, p: np.where(_largest_mask(g), p["c"], g),
      scene=True,
    ),
    Primitive(
      "recolour_by_size",
      "object",
      lambda rng: {"by_size": tuple(int(c) for c in colours(rng, 4))},
      _by_size,
      scene=True,
    ),
    Primitive("hollow", "object", lambda rng: {}, _hollow, scene=True),
    Primitive("bounding_boxes", "object", _colour(), _boxes, scene=True),
    Primitive("frame", "paint", _colour(), _frame, fills=True),
  ]
}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in PRIMITIVES.values()))


def _nonzero_shift(rng):
  while True:
    dr, dc = (int(x) for x in rng.integers(-2, 3, size=2))
    if (dr, dc) != (0, 0):
      return dr, dc
