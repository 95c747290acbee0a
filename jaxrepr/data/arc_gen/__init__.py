"""Procedural ARC-like task generators: 41 families for training without downloads.

Each family (a `base.Generator`) draws a task's hidden parameters once (`sample_params`) and then
any number of (input, output) pairs of that one program (`sample_pair`), so all pairs of a task
share the transformation, as in ARC and re-ARC. Grids are int32, colours 0..9, sides 1..30.
Difficulty in [0, 1] scales grid sizes and object counts (0 = the smallest grids of a family).

Families by theme:
  geometry.py  flip, rotate, transpose, scale_up, scale_down, tile, mirror_concat, gravity,
               shift_wrap, translate, crop_object, fractal
  colour.py    colour_map, recolour_all, swap_colours, remove_colour, fill_background, invert,
               checker_recolour, majority_colour, count_to_bar, denoise
  objects.py   largest_object_crop, keep_largest, recolour_by_size, hollow_rects, fill_enclosed,
               count_objects, ring_pixels, bounding_box, colour_largest
  patterns.py  rays, crosses, diagonals, connect_pairs, symmetry_complete, logic_halves, sort_bars,
               frame, continue_pattern
  compose.py   compose: 2-3 primitives from distinct groups applied in sequence to object scenes
               or random grids (thousands of programs where each single family has a handful)

Program diversity (distinct hidden parameters per 1,000 draws) is measured by `diversity.py`.

`make_task` rejects pairs whose output equals the input (no family is meant to be the identity),
pairs that do not fit `max_size`, and layouts a family flags as ambiguous (`base.Retry`), drawing
again with the same hidden parameters; these redraws come from the task's own rng, so a task is
still a deterministic function of its rng. `accept` restricts the hidden parameters (the held-out
split of `splits.py`): parameters it rejects are drawn again, also from the task's rng; without it
no extra draw is made, so a family's tasks are the same as before `accept` existed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxrepr.data.arc_gen import colour, compose, geometry, objects, patterns
from jaxrepr.data.arc_gen.base import MAX_SIDE, Generator, Pair, Params, Retry
from jaxrepr.errors import DataError

GENERATORS: dict[str, Generator] = {
  **geometry.FAMILIES,
  **colour.FAMILIES,
  **objects.FAMILIES,
  **patterns.FAMILIES,
  compose.NAME: compose.GENERATOR,
}

_MAX_TRIES = 50
_MAX_PARAM_DRAWS = 1000  # rejection-sampling attempts for `accept` before the side is called empty


def _valid(grid: np.ndarray, max_rows: int, max_cols: int) -> bool:
  return (
    grid.ndim == 2
    and 1 <= grid.shape[0] <= min(max_rows, MAX_SIDE)
    and 1 <= grid.shape[1] <= min(max_cols, MAX_SIDE)
    and grid.min() >= 0
    and grid.max() <= 9
  )


def make_task(
  rng: np.random.Generator,
  name: str,
  num_pairs: int,
  difficulty: float,
  max_size: int | Sequence[int] = MAX_SIDE,
  *,
  return_params: bool = False,
  accept: Callable[[Params], bool] | None = None,
):
  """`num_pairs` (input, output) pairs of one hidden program of family `name`.

  Returns the list of pairs, or (pairs, hidden parameters) with `return_params=True`.
  `accept(params)`, if given, must hold for the task's hidden parameters (they are redrawn until it
  does; a DataError after 1,000 draws).

  `max_size` is an int (square) or (max_rows, max_cols). Raises ValueError for an unknown family
  or when no valid pair fits after repeated draws (e.g. a tiny `max_size`); difficulty is lowered
  towards 0 on later attempts so that small limits are still met when the family allows it.
  """
  if name not in GENERATORS:
    raise DataError(f"unknown ARC generator {name!r}; known: {sorted(GENERATORS)}")
  if not 0.0 <= difficulty <= 1.0:
    raise DataError(f"difficulty must be in [0, 1], got {difficulty}")
  max_rows, max_cols = (max_size, max_size) if isinstance(max_size, int) else tuple(max_size)
  gen = GENERATORS[name]
  limits = dict(max_rows=max_rows, max_cols=max_cols) if gen.sized else {}
  params = gen.sample_params(rng, difficulty, **limits)
  draws = 1
  while accept is not None and not accept(params):
    if draws >= _MAX_PARAM_DRAWS:
      raise DataError(
        f"ARC generator {name!r}: no hidden parameters accepted in {draws} draws (the held-out "
        "split leaves this side of the family empty)"
      )
    params, draws = gen.sample_params(rng, difficulty, **limits), draws + 1
  pairs: list[Pair] = []
  failures = 0
  while len(pairs) < num_pairs:
    # after repeated failures (usually a small max_size) fall back to easier, smaller grids
    d = (
      difficulty if failures < _MAX_TRIES // 2 else difficulty * 0.5 ** (failures - _MAX_TRIES // 2)
    )
    try:
      inp, out = gen.sample_pair(rng, params, d, **limits)
    except Retry:
      inp = out = None
    ok = (
      inp is not None
      and _valid(inp, max_rows, max_cols)
      and _valid(out, max_rows, max_cols)
      and not (inp.shape == out.shape and np.array_equal(inp, out))
    )
    if ok:
      pairs.append((np.asarray(inp, np.int32), np.asarray(out, np.int32)))
      continue
    failures += 1
    if failures >= _MAX_TRIES * max(1, num_pairs):
      raise DataError(
        f"ARC generator {name!r} produced no valid pair within {max_rows}x{max_cols} "
        f"after {failures} draws (difficulty {difficulty})"
      )
  return (pairs, params) if return_params else pairs


__all__ = ["GENERATORS", "Generator", "make_task"]
