"""The pattern task of Macfarlane & Bonnet, "Searching Latent Program Spaces" (§5.2).

A task is one hidden P x P pattern; each cell is non-zero with probability `density`, its colour
uniform in 1..9. Each of the N pairs puts a single marker (colour 1) at a random (r, c) in an
otherwise black R x C input; the output is a black R x C grid with the pattern pasted at
[r:r+P, c:c+P] (the marker is not kept). Marker positions are drawn independently per pair,
r ~ U{0..R-P}, c ~ U{0..C-P} (reference code `PatternTaskGenerator`).

Paper settings: 10x10 grids, 4x4 pattern, density 1.0, N = 4 (Table 1); latent-viz 4x4 grids with
a 2x2 pattern (Table 14); OOD: train density 0.5, test 0.75 (weak) and 1.0 (strong) (Table 6).
Fixed test sets: 256 tasks (96 for OOD) of 4 pairs.

Batches (what LPN consumes): {'grids': int32 (B, N, max_rows, max_cols, 2),
'shapes': int32 (B, N, 2, 2) = [[R_in, R_out], [C_in, C_out]]}.

Data config fields (`config.data`):
  name: 'pattern'.
  grid_rows, grid_cols: R x C of every input and output grid (10 x 10).
  pattern_size: P, side of the square pattern (4); must be <= min(R, C).
  density: probability that a pattern cell is non-zero in training tasks (1.0).
  colours: pattern cells take colours uniform in 1..colours (9, the paper's; fewer colours make
    fewer distinct programs, which the CPU-sized default config uses).
  num_pairs: N, pairs per task (4).
  max_rows, max_cols: padded size of the batch arrays; placeholders default to grid_rows/grid_cols.
  eval_density: density of the fixed test set; placeholder, defaults to `density` (set 0.75 or 1.0
    for the OOD test sets).
  eval_num_tasks: size of the fixed test set (256).
  eval_seed: seed of the fixed test set (kept apart from the run seed so every run tests on the
    same tasks).
"""

from __future__ import annotations

import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError

MARKER_COLOUR = 1


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pattern"
  c.grid_rows = 10
  c.grid_cols = 10
  c.pattern_size = 4
  c.density = 1.0
  c.colours = 9
  c.num_pairs = 4
  c.max_rows = config_dict.placeholder(int)
  c.max_cols = config_dict.placeholder(int)
  c.eval_density = config_dict.placeholder(float)
  c.eval_num_tasks = 256
  c.eval_seed = 1234
  return c


def _padded_size(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  rows = cfg.max_rows or cfg.grid_rows
  cols = cfg.max_cols or cfg.grid_cols
  return int(rows), int(cols)


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad `config.data` field."""
  rows, cols = _padded_size(cfg)
  if not 1 <= cfg.pattern_size <= min(cfg.grid_rows, cfg.grid_cols):
    raise ConfigError(
      f"config.data.pattern_size={cfg.pattern_size} must be in 1..min(grid_rows, "
      f"grid_cols)={min(cfg.grid_rows, cfg.grid_cols)}"
    )
  if not 1 <= cfg.grid_rows <= 30 or not 1 <= cfg.grid_cols <= 30:
    raise ConfigError(
      f"config.data.grid_rows/grid_cols must be in 1..30, got {cfg.grid_rows}x{cfg.grid_cols}"
    )
  if rows < cfg.grid_rows or cols < cfg.grid_cols:
    raise ConfigError(
      f"config.data.max_rows x max_cols = {rows}x{cols} is smaller than the grid "
      f"{cfg.grid_rows}x{cfg.grid_cols}"
    )
  for field in ("density", "eval_density"):
    d = cfg[field]
    if d is not None and not 0.0 <= d <= 1.0:
      raise ConfigError(f"config.data.{field}={d} must be in [0, 1]")
  if not 1 <= cfg.colours <= 9:
    raise ConfigError(f"config.data.colours={cfg.colours} must be in 1..9")
  if cfg.num_pairs < 1:
    raise ConfigError(f"config.data.num_pairs={cfg.num_pairs} must be >= 1")


def make_task(
  rng: np.random.Generator,
  *,
  grid_rows: int,
  grid_cols: int,
  pattern_size: int,
  density: float,
  num_pairs: int,
  max_rows: int | None = None,
  max_cols: int | None = None,
  colours: int = 9,
) -> dict[str, np.ndarray]:
  """One pattern task: {'grids': int32 (N, max_rows, max_cols, 2), 'shapes': int32 (N, 2, 2)}."""
  max_rows = max_rows or grid_rows
  max_cols = max_cols or grid_cols
  p = pattern_size
  colours_PxP = rng.integers(1, colours + 1, size=(p, p))
  pattern_PxP = np.where(rng.random((p, p)) < density, colours_PxP, 0).astype(np.int32)
  r_N = rng.integers(0, grid_rows - p + 1, size=num_pairs)
  c_N = rng.integers(0, grid_cols - p + 1, size=num_pairs)
  grids = np.zeros((num_pairs, max_rows, max_cols, 2), np.int32)
  pairs = np.arange(num_pairs)
  grids[pairs, r_N, c_N, 0] = MARKER_COLOUR
  # rows/cols of the P x P window of each pair, broadcast to (N, P, P)
  rr_NxPxP = r_N[:, None, None] + np.arange(p)[None, :, None]
  cc_NxPxP = c_N[:, None, None] + np.arange(p)[None, None, :]
  grids[pairs[:, None, None], rr_NxPxP, cc_NxPxP, 1] = pattern_PxP[None]
  shapes = np.broadcast_to(
    np.array([[grid_rows, grid_rows], [grid_cols, grid_cols]], np.int32), (num_pairs, 2, 2)
  ).copy()
  return {"grids": grids, "shapes": shapes}


def _task_kwargs(cfg: ml_collections.ConfigDict, density: float) -> dict:
  rows, cols = _padded_size(cfg)
  return dict(
    grid_rows=cfg.grid_rows,
    grid_cols=cfg.grid_cols,
    pattern_size=cfg.pattern_size,
    density=density,
    num_pairs=cfg.num_pairs,
    max_rows=rows,
    max_cols=cols,
    colours=cfg.colours,
  )


def train_iterator(
  data_cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> pipeline.GeneratorIterator:
  """Endless batches of fresh pattern tasks at `data_cfg.density`."""
  check_config(data_cfg)
  kwargs = _task_kwargs(data_cfg, data_cfg.density)
  return pipeline.GeneratorIterator(
    lambda rng: make_task(rng, **kwargs),
    batch_size,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
  )


def eval_set(
  data_cfg: ml_collections.ConfigDict,
  num_tasks: int | None = None,
  seed: int | None = None,
  density: float | None = None,
) -> dict[str, np.ndarray]:
  """A fixed test set: {'grids': (num_tasks, N, R, C, 2), 'shapes': (num_tasks, N, 2, 2)}.

  Defaults: `data_cfg.eval_num_tasks` tasks, seed `data_cfg.eval_seed`, density
  `data_cfg.eval_density` (falling back to the training density). The tasks come from a seed
  stream separate from training (`[seed, 2**32 - 1, i]`; the iterator's `[seed, k, j]` would need
  batch k = 2**32 - 1 to collide), so test tasks are not training tasks even when the seeds
  coincide.
  """
  check_config(data_cfg)
  num_tasks = data_cfg.eval_num_tasks if num_tasks is None else num_tasks
  seed = data_cfg.eval_seed if seed is None else seed
  if density is None:
    density = data_cfg.density if data_cfg.eval_density is None else data_cfg.eval_density
  kwargs = _task_kwargs(data_cfg, density)
  tasks = [
    make_task(np.random.default_rng([seed, 2**32 - 1, i]), **kwargs) for i in range(num_tasks)
  ]
  return pipeline.stack_examples(tasks)
