"""ARC-style grids: validation, padding into the LPN batch layout, cropping back.

A grid is a rectangular 2-D array of colours 0..9 with 1..30 rows and columns (ARC-AGI rules).
LPN consumes a task's pairs as one padded array (the layout of the LPN reference code,
github.com/clement-bonnet/lpn):

  grids  int32 (N, R, C, 2): channel 0 = input, 1 = output, zero-padded bottom/right to R x C
  shapes int32 (N, 2, 2):    [[R_in, R_out], [C_in, C_out]], values in [1, max]

A task with fewer real pairs than N (an ARC task of 3 pairs in a batch of 4-pair tasks) is padded
with empty pairs (`pad_task`) and carries `pair_mask` bool (N,): True for a real pair. Padding by
repeating a real pair instead would put a copy of a pair in its own leave-one-out context.

Nothing is ever truncated: a grid larger than R x C raises `OversizeGridError` (a `ValueError`)
that names where the grid came from; callers that prefer to skip such tasks catch it and count.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np

from jaxrepr.errors import DataError

NUM_COLOURS = 10
MAX_SIDE = 30

Pair = tuple[np.ndarray, np.ndarray]


class OversizeGridError(ValueError):
  """A valid grid that does not fit the configured max_rows x max_cols."""


def validate_grid(grid: Any, where: str = "grid") -> np.ndarray:
  """Returns `grid` as an int32 (rows, cols) array, or raises ValueError naming `where`.

  Accepts a list of lists of ints (ARC JSON) or an integer numpy array. Rejects ragged rows,
  non-integers (including bools and floats), colours outside 0..9, and sides outside 1..30.
  """
  if isinstance(grid, np.ndarray):
    if grid.ndim != 2:
      raise DataError(f"{where}: a grid must be 2-D, got an array of shape {grid.shape}")
    if not np.issubdtype(grid.dtype, np.integer):
      raise DataError(f"{where}: grid cells must be integers, got dtype {grid.dtype}")
    arr = grid.astype(np.int32)
  else:
    if not isinstance(grid, (list, tuple)) or not grid:
      raise DataError(
        f"{where}: a grid must be a non-empty list of rows, got {type(grid).__name__}"
        + ("" if grid else " (empty)")
      )
    width = None
    for i, row in enumerate(grid):
      if not isinstance(row, (list, tuple)):
        raise DataError(f"{where}: row {i} is a {type(row).__name__}, not a list")
      if width is None:
        width = len(row)
      elif len(row) != width:
        raise DataError(
          f"{where}: the grid is not rectangular (row 0 has {width} cells, row {i} has {len(row)})"
        )
      for j, v in enumerate(row):
        # bool is an int subclass in Python; a JSON true/false in a grid is a data error.
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
          raise DataError(f"{where}: cell ({i}, {j}) is {v!r}, not an integer colour")
    arr = np.asarray(grid, dtype=np.int32).reshape(len(grid), width or 0)
  rows, cols = arr.shape
  if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
    raise DataError(f"{where}: grid is {rows}x{cols}; each side must be in 1..{MAX_SIDE}")
  if arr.min() < 0 or arr.max() >= NUM_COLOURS:
    bad = arr[(arr < 0) | (arr >= NUM_COLOURS)][0]
    raise DataError(f"{where}: colour {int(bad)} is outside 0..{NUM_COLOURS - 1}")
  return arr


def fits(grid: np.ndarray, max_rows: int, max_cols: int) -> bool:
  return grid.shape[0] <= max_rows and grid.shape[1] <= max_cols


def check_fits(grid: np.ndarray, max_rows: int, max_cols: int, where: str = "grid") -> None:
  if not fits(grid, max_rows, max_cols):
    raise OversizeGridError(
      f"{where}: grid is {grid.shape[0]}x{grid.shape[1]}, larger than the "
      f"configured max_rows x max_cols = {max_rows}x{max_cols}"
    )


def pad_grid(grid: np.ndarray, max_rows: int, max_cols: int, where: str = "grid") -> np.ndarray:
  """Zero-pads one grid bottom/right to (max_rows, max_cols); raises if it does not fit."""
  check_fits(grid, max_rows, max_cols, where)
  out = np.zeros((max_rows, max_cols), np.int32)
  out[: grid.shape[0], : grid.shape[1]] = grid
  return out


def pad_pair(
  inp: np.ndarray, out: np.ndarray, max_rows: int, max_cols: int, where: str = "pair"
) -> tuple[np.ndarray, np.ndarray]:
  """One (input, output) pair -> (grids int32 (R, C, 2), shapes int32 (2, 2))."""
  check_fits(inp, max_rows, max_cols, f"{where} input")
  check_fits(out, max_rows, max_cols, f"{where} output")
  grids_RxCx2 = np.zeros((max_rows, max_cols, 2), np.int32)
  grids_RxCx2[: inp.shape[0], : inp.shape[1], 0] = inp
  grids_RxCx2[: out.shape[0], : out.shape[1], 1] = out
  shapes_2x2 = np.array([[inp.shape[0], out.shape[0]], [inp.shape[1], out.shape[1]]], np.int32)
  return grids_RxCx2, shapes_2x2


def pad_pairs(
  pairs: Sequence[Pair], max_rows: int, max_cols: int, where: str = "task"
) -> dict[str, np.ndarray]:
  """N pairs -> {'grids': int32 (N, R, C, 2), 'shapes': int32 (N, 2, 2)}."""
  padded = [
    pad_pair(i, o, max_rows, max_cols, f"{where} pair {k}") for k, (i, o) in enumerate(pairs)
  ]
  return {"grids": np.stack([g for g, _ in padded]), "shapes": np.stack([s for _, s in padded])}


def pad_task(
  pairs: Sequence[Pair], num_pairs: int, max_rows: int, max_cols: int, where: str = "task"
) -> dict[str, np.ndarray]:
  """At most `num_pairs` distinct pairs -> `pad_pairs` arrays of exactly `num_pairs` rows plus
  'pair_mask' bool (num_pairs,). Missing rows are empty pairs: zero grids of shape 1 x 1 (a valid
  shape, so every token the model reads is well formed), marked False."""
  if not 1 <= len(pairs) <= num_pairs:
    raise DataError(f"{where}: {len(pairs)} pairs; expected 1..{num_pairs}")
  out = pad_pairs(pairs, max_rows, max_cols, where)
  missing = num_pairs - len(pairs)
  out["grids"] = np.concatenate(
    [out["grids"], np.zeros((missing, max_rows, max_cols, 2), np.int32)]
  )
  out["shapes"] = np.concatenate([out["shapes"], np.ones((missing, 2, 2), np.int32)])
  out["pair_mask"] = np.arange(num_pairs) < len(pairs)
  return out


def crop(grid_RxC: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """The top-left rows x cols block of a padded grid (the inverse of `pad_grid`)."""
  rows, cols = int(rows), int(cols)
  if not (1 <= rows <= grid_RxC.shape[0] and 1 <= cols <= grid_RxC.shape[1]):
    raise DataError(f"cannot crop a {grid_RxC.shape} grid to {rows}x{cols}")
  return np.asarray(grid_RxC)[:rows, :cols]


def unpad_pair(grids_RxCx2: np.ndarray, shapes_2x2: np.ndarray) -> Pair:
  """Inverse of `pad_pair`: the (input, output) grids at their true shapes."""
  shapes_2x2 = np.asarray(shapes_2x2)
  return (
    crop(grids_RxCx2[..., 0], shapes_2x2[0, 0], shapes_2x2[1, 0]),
    crop(grids_RxCx2[..., 1], shapes_2x2[0, 1], shapes_2x2[1, 1]),
  )


def unpad_pairs(grids_NxRxCx2: np.ndarray, shapes_Nx2x2: np.ndarray) -> list[Pair]:
  return [unpad_pair(g, s) for g, s in zip(grids_NxRxCx2, shapes_Nx2x2)]
