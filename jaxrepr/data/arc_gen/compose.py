"""The compositional ARC-like family: a task is a sequence of 2-3 primitives applied in order.

Why: each of the 40 single-transformation families has only a handful of distinct programs (see
`diversity.py`), while ARC programs combine several steps. Macfarlane & Bonnet, "Searching Latent
Program Spaces", train their ARC-AGI model on re-ARC's generated tasks, thousands of programs;
composing primitives gives a program space large enough that the latent space has to generalise
rather than enumerate, without a download.

A primitive (primitives.py) is a total function grid -> grid (black, 0, is the background) with
hidden parameters, taken from the single families where they compose: dihedral maps, colour maps,
gravity and shifts, size changes (scale, tile, mirror, crop to content), object operations on
4-connected components (keep / recolour the largest, recolour by size, hollow, fill bounding boxes)
and a frame. Primitives are grouped (`GROUPS`); a program takes at most one primitive per group,
because two of one group collapse into one of that group (two dihedral maps are one dihedral map,
two colour maps one colour map), and a program is never shorter than 2 steps. Steps that fill the
background come last.

Inputs are object scenes (several separated sprites on a black background) or random dense grids;
a program with an object primitive always gets a scene. Input sides are bounded so that the size
changes of the program keep the output within 30 x 30. A pair whose step leaves its input unchanged
is redrawn (`Retry`), so every pair shows every step of its program.

Hidden parameters: {'steps': ((primitive name, {parameter: value}), ...), 'input': 'scene' |
'noise'}. A program's combination (`combination`) is the sorted tuple of its primitive names: the
unit of the held-out split (both orders of two primitives are one combination, so a held-out
combination is never seen in training in another order).
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from jaxrepr.data.arc_gen.base import (
  MAX_SIDE,
  Generator,
  Params,
  Retry,
  colours,
  count,
  dense_grid,
  place,
  side,
  sprite,
)
from jaxrepr.data.arc_gen.primitives import GROUPS, PRIMITIVES

NAME = "compose"


def combination(params: Params) -> tuple[str, ...]:
  """The unit of the held-out split: the sorted primitive names of a program (order ignored)."""
  return tuple(sorted(name for name, _ in params["steps"]))


def all_combinations() -> list[tuple[str, ...]]:
  """Every combination a program can have: 2 or 3 primitives of distinct groups, names sorted."""
  by_group = [[n for n, p in PRIMITIVES.items() if p.group == g] for g in GROUPS]
  return sorted(
    tuple(sorted(names))
    for k in (2, 3)
    for groups in itertools.combinations(by_group, k)
    for names in itertools.product(*groups)
  )


def is_heldout(combo: tuple[str, ...], fraction: float) -> bool:
  """A stable hash (blake2b of the names, independent of seed, process and numpy version) of the
  combination below `fraction`: a fixed share of combinations that training never draws."""
  digest = hashlib.blake2b("+".join(combo).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0**64 < fraction


def sample_params(
  rng: np.random.Generator, difficulty: float, max_rows: int = MAX_SIDE, max_cols: int = MAX_SIDE
) -> Params:
  """A program (`_draw_program`) whose inputs fit the limits and that acts on them (`_viable`)."""
  while True:
    params = _draw_program(rng)
    if _input_sides(params, max_rows, max_cols) is None:
      continue
    check = np.random.default_rng(rng.integers(2**63))
    if _viable(check, params, difficulty, max_rows, max_cols):
      return params


VIABILITY_TRIES, VIABILITY_MIN = 12, 3


def _viable(rng, params: Params, difficulty: float, max_rows: int, max_cols: int) -> bool:
  """At least VIABILITY_MIN of VIABILITY_TRIES drawn pairs are valid (no step is a no-op).

  Some combinations can never act, or rarely: a colour removed after a step that recoloured
  everything, the largest object after a mirror that doubled every object (always a tie). Such a
  program would make `make_task` give up; drawing another one keeps every task solvable.
  """
  ok = 0
  for _ in range(VIABILITY_TRIES):
    try:
      sample_pair(rng, params, difficulty, max_rows, max_cols)
      ok += 1
    except Retry:
      pass
  return ok >= VIABILITY_MIN


def _draw_program(rng: np.random.Generator) -> Params:
  """2 or 3 primitives from distinct groups, in a random order, each with its own parameters."""
  k = int(rng.integers(2, 4))
  groups = rng.choice(len(GROUPS), size=k, replace=False)
  steps = []
  for g in groups:
    names = [p.name for p in PRIMITIVES.values() if p.group == GROUPS[int(g)]]
    prim = PRIMITIVES[names[int(rng.integers(len(names)))]]
    steps.append((prim.name, prim.sample(rng)))
  # a step that fills the background would leave later steps no objects or content to act on
  steps.sort(key=lambda step: PRIMITIVES[step[0]].fills)
  needs_scene = any(PRIMITIVES[n].scene for n, _ in steps)
  kind = "scene" if needs_scene or rng.integers(2) else "noise"
  return {"steps": tuple(steps), "input": kind}


def run_program(grid: np.ndarray, params: Params, *, strict: bool = True) -> np.ndarray:
  """Applies the steps in order; with `strict`, a step that changes nothing raises Retry."""
  g = np.asarray(grid, np.int32)
  for name, p in params["steps"]:
    out = np.ascontiguousarray(PRIMITIVES[name].apply(g, p), np.int32)
    if strict and out.shape == g.shape and np.array_equal(out, g):
      raise Retry
    g = out
  return g


def _referenced_colours(params: Params) -> list[int]:
  """Colours a program reads (swap, remove): put into inputs so that those steps act."""
  found = []
  for name, p in params["steps"]:
    if name == "swap_colours":
      found += [p["a"], p["b"]]
    elif name == "remove_colour":
      found.append(p["c"])
  return found


def scene(
  rng: np.random.Generator, h: int, w: int, difficulty: float, palette: np.ndarray
) -> np.ndarray:
  """Several separated sprites (1..4 cells a side) of palette colours on a black h x w grid."""
  g = np.zeros((h, w), np.int32)
  occupied = np.zeros((h, w), bool)
  for _ in range(count(rng, difficulty, 2, 8)):
    oh, ow = int(rng.integers(1, min(4, h) + 1)), int(rng.integers(1, min(4, w) + 1))
    place(rng, g, occupied, sprite(rng, oh, ow, int(rng.choice(palette))))
  return g


def _input_sides(params: Params, max_rows: int, max_cols: int) -> tuple[int, int] | None:
  """(lo, hi) input sides whose outputs fit max_rows x max_cols whatever the program's rotations
  and size changes, or None when even the smallest useful input would not fit."""
  growth = int(np.prod([PRIMITIVES[n].growth(p) for n, p in params["steps"]]))
  hi = min(max_rows, max_cols, MAX_SIDE) // growth
  smallest = 4 if params["input"] == "scene" else 3  # below this, few steps can act
  if hi < smallest:
    return None
  return min(hi, 6 if params["input"] == "scene" else 3), hi


def sample_pair(
  rng: np.random.Generator,
  params: Params,
  difficulty: float,
  max_rows: int = MAX_SIDE,
  max_cols: int = MAX_SIDE,
):
  sides = _input_sides(params, max_rows, max_cols)
  if sides is None:
    raise Retry
  h, w = side(rng, difficulty, *sides), side(rng, difficulty, *sides)
  wanted = _referenced_colours(params)
  extra = colours(rng, count(rng, difficulty, 1, 4), exclude=tuple(wanted))
  palette = np.concatenate([np.asarray(wanted, np.int64), extra]).astype(np.int64)
  if params["input"] == "scene":
    g = scene(rng, h, w, difficulty, palette)
  else:
    g = dense_grid(rng, h, w, difficulty)
    if wanted:  # a dense grid draws its own palette; make sure the colours read are present
      cells = rng.random((h, w)) < 0.2
      g = np.where(cells, rng.choice(np.asarray(wanted), size=(h, w)), g).astype(np.int32)
  return g, run_program(g, params)


GENERATOR = Generator(
  NAME,
  sample_params,
  sample_pair,
  "A sequence of 2-3 primitives from distinct groups (geometry, colour, motion, size, objects, "
  "frame) on an object scene or a random grid.",
  sized=True,
)
