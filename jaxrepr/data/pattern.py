"""The pattern task of Macfarlane & Bonnet, "Searching Latent Program Spaces" (§5.2).

A task is one hidden P x P pattern; each cell is non-zero with probability `density`, its colour
uniform in 1..9. Each of the N pairs puts a single marker (colour 1) at a random (r, c) in an
otherwise black R x C input; the output is a black R x C grid with the pattern pasted at
[r:r+P, c:c+P] (the marker is not kept). Marker positions are drawn independently per pair,
r ~ U{0..R-P}, c ~ U{0..C-P} (reference code `PatternTaskGenerator`).

Paper settings: 10x10 grids, 4x4 pattern, density 1.0, N = 4 (Table 1); latent-viz 4x4 grids with
a 2x2 pattern (Table 14); OOD: train density 0.5, test 0.75 (weak) and 1.0 (strong) (Table 6).
Fixed test sets: 256 tasks (96 for OOD) of 4 pairs.

Splits (ours; the paper's only OOD axis is density, Table 6). The program of a task is its pattern;
with few colours and small patterns (the CPU default: 3^4 = 81 programs) every test program is
also a training program unless the programs are split:
  program split: a program is held out when a stable hash of its P x P array (blake2b of its
    bytes, independent of the seed, process and numpy version) falls below `heldout_fraction`;
    training redraws a held-out pattern (rejection sampling), the fixed test set draws only
    held-out ones. Held-out programs are programs the encoder never saw: what latent search is for
    (the paper's §1 and §5.2).
  position split: markers of training pairs never lie in the last `heldout_marker_rows` possible
    marker rows (r > R - P - k); test pairs only there, so the output rows these patterns cover
    are never coloured during training.

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
  program_split: 'none' (any program anywhere; the default) or 'heldout' (see Splits).
  heldout_fraction: share of all programs held out under program_split='heldout' (0.25).
  position_split: 'none' (the default) or 'heldout' (see Splits).
  heldout_marker_rows: k, the number of marker rows held out under position_split='heldout' (1);
    1 <= k <= R - P so that training keeps at least one row.
  eval_programs: which side of the splits the fixed test set draws from: 'heldout' (the default)
    or 'train' (programs and marker rows training may draw: the in-distribution comparison).
"""

from __future__ import annotations

import hashlib

import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError, DataError

MARKER_COLOUR = 1
SPLITS = ("none", "heldout")
PROGRAMS = ("all", "train", "heldout")  # which programs `make_task` may draw
MAX_DRAWS = 10_000  # rejection-sampling attempts before a split is declared empty


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
  c.program_split = "none"
  c.heldout_fraction = 0.25
  c.position_split = "none"
  c.heldout_marker_rows = 1
  c.eval_programs = "heldout"
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
  for field in ("program_split", "position_split"):
    if cfg[field] not in SPLITS:
      raise ConfigError(f"config.data.{field}={cfg[field]!r} must be one of {SPLITS}")
  if cfg.program_split == "heldout" and not 0.0 < cfg.heldout_fraction < 1.0:
    raise ConfigError(f"config.data.heldout_fraction={cfg.heldout_fraction} must be in (0, 1)")
  marker_rows = cfg.grid_rows - cfg.pattern_size + 1
  if cfg.position_split == "heldout" and not 1 <= cfg.heldout_marker_rows < marker_rows:
    raise ConfigError(
      f"config.data.heldout_marker_rows={cfg.heldout_marker_rows} must be in 1..{marker_rows - 1}"
      f" (grid_rows - pattern_size = {marker_rows - 1}: training keeps at least one marker row)"
    )
  if cfg.eval_programs not in ("heldout", "train"):
    raise ConfigError(
      f"config.data.eval_programs={cfg.eval_programs!r} must be 'heldout' or 'train'"
    )


def program_hash(pattern_PxP: np.ndarray) -> float:
  """A stable number in [0, 1) keyed on the program itself (the pattern's size and cells)."""
  p = np.asarray(pattern_PxP)
  key = np.asarray(p.shape, np.uint8).tobytes() + p.astype(np.uint8).tobytes()
  return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2.0**64


def is_heldout(pattern_PxP: np.ndarray, fraction: float) -> bool:
  """Whether the program split holds this program out of training."""
  return program_hash(pattern_PxP) < fraction


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
  programs: str = "all",
  heldout_fraction: float = 0.0,
  marker_rows: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
  """One pattern task: {'grids': int32 (N, max_rows, max_cols, 2), 'shapes': int32 (N, 2, 2)}.

  `programs`: 'all', or only programs on one side of the program split ('train', 'heldout'),
  drawn by rejection. `marker_rows`: the half-open range of marker rows (default all of
  0..R-P). With the defaults the draws are those of the reference generator.
  """
  if programs not in PROGRAMS:
    raise ValueError(f"programs={programs!r} must be one of {PROGRAMS}")
  max_rows = max_rows or grid_rows
  max_cols = max_cols or grid_cols
  p = pattern_size
  for _ in range(MAX_DRAWS):
    colours_PxP = rng.integers(1, colours + 1, size=(p, p))
    pattern_PxP = np.where(rng.random((p, p)) < density, colours_PxP, 0).astype(np.int32)
    if programs == "all" or is_heldout(pattern_PxP, heldout_fraction) == (programs == "heldout"):
      break
  else:
    raise DataError(
      f"no {programs} program in {MAX_DRAWS} draws: with {colours} colours, {p}x{p} patterns and "
      f"density {density}, config.data.heldout_fraction={heldout_fraction} leaves that side empty"
    )
  lo, hi = marker_rows or (0, grid_rows - p + 1)
  r_N = rng.integers(lo, hi, size=num_pairs)
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


def _task_kwargs(cfg: ml_collections.ConfigDict, density: float, side: str) -> dict:
  """make_task's arguments for one side ('train' or 'heldout') of the configured splits."""
  rows, cols = _padded_size(cfg)
  split_rows = cfg.grid_rows - cfg.pattern_size + 1 - cfg.heldout_marker_rows
  marker_rows = None
  if cfg.position_split == "heldout":
    marker_rows = (
      (0, split_rows) if side == "train" else (split_rows, split_rows + cfg.heldout_marker_rows)
    )
  return dict(
    programs=side if cfg.program_split == "heldout" else "all",
    heldout_fraction=cfg.heldout_fraction,
    marker_rows=marker_rows,
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
  """Endless batches of fresh pattern tasks at `data_cfg.density`, from the training side of the
  splits (never a held-out program or marker row)."""
  check_config(data_cfg)
  kwargs = _task_kwargs(data_cfg, data_cfg.density, "train")
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
  `data_cfg.eval_density` (falling back to the training density); under a split, from the side
  `data_cfg.eval_programs` names (held-out programs and marker rows by default). The tasks come
  from a seed stream separate from training (`[seed, 2**32 - 1, i]`; the iterator's
  `[seed, k, j]` would need batch k = 2**32 - 1 to collide), so test tasks are not training tasks
  even when the seeds coincide.
  """
  check_config(data_cfg)
  num_tasks = data_cfg.eval_num_tasks if num_tasks is None else num_tasks
  seed = data_cfg.eval_seed if seed is None else seed
  if density is None:
    density = data_cfg.density if data_cfg.eval_density is None else data_cfg.eval_density
  kwargs = _task_kwargs(data_cfg, density, data_cfg.eval_programs)
  tasks = [
    make_task(np.random.default_rng([seed, 2**32 - 1, i]), **kwargs) for i in range(num_tasks)
  ]
  return pipeline.stack_examples(tasks)
