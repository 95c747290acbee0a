"""Run directories to a results table: the layouts of runs on disk, their final values, the
markdown tables launch/summarize_runs.py prints and writes (see its docstring for the layouts and
the tables); launch/_doc_tables.py adds the text stated beside a table in a docs page."""

import glob
import json
import os
import re

from jaxrepr.errors import ConfigError, DataError, MissingFileError
from jaxrepr.metrics import read_metric, train_seconds

# The directory of one seed of a multi-seed run or sweep point: W/s<seed>, W/<point>/s<seed>.
REPLICA = re.compile(r"s(\d+)")
# The directory of one stage of a multi-stage run (configs/distill.py): W/stage_<k>.
STAGE = re.compile(r"stage_(\d+)")


class IncompleteRun(DataError):
  """A run has not logged the metric at its final step."""


def _replicas(path: str) -> list[str]:
  """The seed directories `path`/s<seed> in seed order."""
  found = [(int(m.group(1)), m.group(0)) for m in map(REPLICA.fullmatch, _subdirs(path)) if m]
  return [os.path.join(path, name) for _, name in sorted(found)]


def _subdirs(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []  # not a run directory: reading its metrics names it
  return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def _seed_dirs(path: str) -> list[str]:
  """The seed directories of `path` and of its sweep points (subdirectories named `field=value`),
  at any depth: a sweep of fields that change the program nests its in-program points."""
  points = [os.path.join(path, n) for n in _subdirs(path) if "=" in n]
  return _replicas(path) + [r for p in points for r in _seed_dirs(p)]


def run_dirs(path: str) -> list[str]:
  """The run directories that the directory `path` stands for: its seeds `path`/s<seed> (a
  multi-seed run) and those of its points `path`/<point>/s<seed> (a sweep), else itself."""
  return _seed_dirs(path) or [path]


def labelled(workdirs: list[str], labels: list[str] | None = None) -> list[tuple[str, str]]:
  """[(label, run directory)] of `workdirs`, each opened into its seeds (and points) as `run_dirs`
  opens it; a label is the given one (default: the directory's name), followed for an opened
  workdir by the seed's path inside it ('W/s0', 'W/optim.lr=0.001/s0')."""
  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ConfigError(f"{len(labels)} labels for {len(workdirs)} runs")
  out = []
  for workdir, label in zip(workdirs, labels):
    for run in run_dirs(workdir):
      inner = os.path.relpath(run, workdir)
      out.append((label if inner == "." else f"{label}/{inner}", run))
  return out


def matching_dirs(pattern: str) -> list[str]:
  """The directories the glob `pattern` matches, sorted; none is an error."""
  matches = [m for m in sorted(glob.glob(pattern)) if os.path.isdir(m)]
  if not matches:
    raise MissingFileError(f"no run directory matches {pattern!r}")
  return matches


def expand(patterns: list[str]) -> list[str]:
  """Run directories named by `patterns` (globs expanded and sorted, multi-seed and sweep workdirs
  opened into their seeds, duplicates dropped); a pattern that names nothing is an error."""
  out = []
  for pattern in patterns:
    out += [r for m in matching_dirs(pattern) for r in run_dirs(m) if r not in out]
  return out


def _key(workdir: str, regex: re.Pattern) -> tuple[str, str, bool, str]:
  """(parent, group base name, whether seeded, seed) of a run directory."""
  parent, name = os.path.split(os.path.normpath(workdir))
  if replica := REPLICA.fullmatch(name):  # W/s<seed>: group W; W/<point>/s<seed>: group <point>
    container, points = parent, []
    while "=" in os.path.basename(container):
      container, point = os.path.split(container)
      points.insert(0, point)
    if not points:
      container, base = os.path.split(parent)
      return container, base, True, replica.group(1)
    return container, "/".join(points), True, replica.group(1)
  match = regex.search(name)
  if match:
    return parent, name[: match.start()] + name[match.end() :], True, match.group(1)
  return parent, name, False, "-"


def group_runs(workdirs: list[str], seed_pattern: str) -> dict[str, dict[str, str]]:
  """{group name: {seed: workdir}}, groups in first-seen order, seeds in numeric order. The name
  is the directory name without its seed, or the multi-seed workdir's or sweep point's name
  (prefixed by the parent when two parents hold the same name); a run without a seed keeps its
  whole name and seed '-'. The same seed twice in a group is an error."""
  regex = re.compile(seed_pattern)
  if regex.groups != 1:
    raise ConfigError(f"--seed_pattern={seed_pattern!r} must have exactly one group (the seed)")
  keyed = [(_key(w, regex), w) for w in workdirs]
  parents = {}
  for (parent, base, seeded, _), _ in keyed:
    parents.setdefault((base, seeded), set()).add(parent)
  groups: dict[str, dict[str, str]] = {}
  for (parent, base, seeded, seed), workdir in keyed:
    name = base if len(parents[(base, seeded)]) == 1 else os.path.join(parent, base)
    if not seeded and any(b == base and s for (b, s) in parents):
      name += " (no seed)"
    runs = groups.setdefault(name, {})
    if seed in runs:
      raise ConfigError(f"{workdir} and {runs[seed]} are both seed {seed} of group {name!r}")
    runs[seed] = workdir
  order = lambda item: int(item[0]) if item[0].isdigit() else -1  # s2 before s10
  return {name: dict(sorted(runs.items(), key=order)) for name, runs in groups.items()}


def run_config(workdir: str) -> dict:
  """The run's config.json ({} when it has none)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not JSON: {e}") from None


def final_value(workdir: str, metric: str, config: dict | None = None) -> float:
  """The metric at its last logged step; IncompleteRun when that step is before the config's
  train.steps (config.json without train.steps: the last logged value is taken as final)."""
  steps, values = read_metric(workdir, metric)
  config = run_config(workdir) if config is None else config
  total = (config.get("train") or {}).get("steps")
  if total is not None and steps[-1] < total:
    raise IncompleteRun(f"{workdir}: {metric} last logged at step {steps[-1]} of {total}")
  return values[-1]


def values_at(workdir: str, metric: str, steps: list[int]) -> list[float | None]:
  """The metric logged at each of `steps` (the newest value where a step was logged twice, e.g. an
  evaluation rerun after a resume), None for a step the run has not reached yet; read once. A
  DataError when the run went past a step without logging it, or is configured to stop before it
  (config.json's train.steps: it never will)."""
  logged, values = read_metric(workdir, metric)
  at = dict(zip(logged, values))  # later lines overwrite earlier ones: the newest value
  total = (run_config(workdir).get("train") or {}).get("steps")
  out = []
  for step in steps:
    if step in at:
      out.append(at[step])
    elif total is not None and step > total:
      raise DataError(f"{workdir}: train.steps is {total}, so it never reaches step {step}")
    elif logged[-1] < step:
      out.append(None)
    else:
      shown = ", ".join(map(str, logged[:12])) + (", ..." if len(logged) > 12 else "")
      raise DataError(f"{workdir}: {metric} was not logged at step {step} (logged at {shown})")
  return out


def mean_std(values: list[float]) -> tuple[float, float | None]:
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def mean_std_cell(values: list[float], digits: int) -> str:
  """'0.70 +- 0.14' over seeds ('0.70' for one seed)."""
  mean, std = mean_std(values)
  return f"{mean:.{digits}f}" + ("" if std is None else f" +- {std:.{digits}f}")


def budget(config: dict) -> str:
  """A run's budget as the table states it: '160 steps x 128', then the budget the steps were set
  from (train.budget, unless a step count) and the run's total FLOPs (train.total_flops)."""
  train = config.get("train") or {}
  parts = []
  if train.get("steps") is not None:
    batch = train.get("batch_size")
    parts.append(f"{train['steps']} steps" + (f" x {batch}" if batch is not None else ""))
  spec = train.get("budget")
  if isinstance(spec, dict) and spec.get("kind") and spec["kind"] != "steps":
    value = spec.get("value")
    parts.append(f"budget: {value:g}" if isinstance(value, int | float) else f"budget: {value}")
    if spec["kind"] == "steps_of":  # the steps of another config, counted in FLOPs
      parts[-1] += f" steps of `{spec.get('reference')}`"
    else:
      parts[-1] += f" {spec['kind']}"
  if train.get("total_flops") is not None:
    parts.append(f"{train['total_flops']:.3g} FLOPs")
  return ", ".join(parts) or "-"


def _distinct(values) -> str:
  return " / ".join(dict.fromkeys(values)) or "-"


def header(metrics: list[str], train_time: bool = False) -> list[str]:
  """The first two lines of the table of `metrics` (with the training time column or not)."""
  cells = ["run"] + [f"{m} (mean +- std)" for m in metrics]
  cells += ["seeds", "per seed", "budget"] + (["train min per seed"] if train_time else [])
  cells += ["commit (runs)"]
  return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def parse_labels(texts: list[str], groups) -> dict[str, str]:
  """{group: label} from 'GROUP=TEXT' strings (the longest group name that fits: a sweep point's
  name holds '=' itself)."""
  out = {}
  for text in texts:
    names = [g for g in groups if text.startswith(g + "=")]
    if not names:
      raise ConfigError(f"--label={text!r} names no group; the groups are {list(groups)}")
    name = max(names, key=len)
    out[name] = text[len(name) + 1 :]
  return out


def _check_labels(labels: dict, groups) -> None:
  unknown = sorted(set(labels) - set(groups))
  if unknown:
    raise ConfigError(f"--label names no group: {unknown}; the groups are {list(groups)}")


def add_commits(configs: list[dict], commits: list[str]) -> list[str]:
  """The commits the runs' config.json recorded (one per run); new ones are appended to
  `commits`, the table's list in order without repeats."""
  recorded = [str(c["commit"]) for c in configs if c.get("commit")]
  commits += [c for c in dict.fromkeys(recorded) if c not in commits]
  return recorded


def _seed_values(runs: dict, metrics: list[str], scale: float, skip: bool, skipped: list):
  """({seed: [final value of each metric] x scale}, [config of each run]) of one group; with `skip`
  an incomplete run is left out and appended to `skipped` as (workdir, reason)."""
  per_seed: dict[str, list[float]] = {}
  configs = []
  for seed, workdir in runs.items():
    try:
      config = run_config(workdir)
      per_seed[seed] = [final_value(workdir, m, config) * scale for m in metrics]
    except DataError as e:
      if not skip:
        raise
      skipped.append((workdir, str(e)))
      continue
    configs.append(config)
  return per_seed, configs


def table(
  groups,
  metrics: list[str],
  scale: float,
  digits: int,
  skip: bool,
  labels: dict | None = None,
  train_time: bool = False,
) -> tuple[str, list, list[str]]:
  """The markdown table, the list of (workdir, reason) skipped, and the commits the tabulated runs
  recorded (in order, without repeats); with `train_time`, a column of each seed's minutes in its
  training loop (read from its logged step rates: `jaxrepr.metrics.train_seconds`)."""
  labels = labels or {}
  _check_labels(labels, groups)
  skipped, commits = [], []
  lines = header(metrics, train_time)
  for name, runs in groups.items():
    per_seed, configs = _seed_values(runs, metrics, scale, skip, skipped)
    if not per_seed:
      continue
    cells = [labels.get(name, name)]
    for i in range(len(metrics)):
      cells.append(mean_std_cell([v[i] for v in per_seed.values()], digits))
    cells.append(str(len(per_seed)))
    cells.append(
      ", ".join(f"s{s}: " + "/".join(f"{x:.{digits}f}" for x in v) for s, v in per_seed.items())
    )
    cells.append(_distinct(budget(c) for c in configs))
    if train_time:
      cells.append(_minutes(runs, per_seed, configs))
    recorded = add_commits(configs, commits)
    cells.append(_distinct(f"`{c}`" for c in recorded))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines), skipped, commits


def _minutes(runs: dict, per_seed: dict, configs: list[dict]) -> str:
  """'13 / 14 / 13': each tabulated seed's minutes in its training loop (one decimal under ten
  minutes, '0.5', so that a short run's time is not rounded away)."""
  minutes = []
  for seed, config in zip(per_seed, configs):
    log_every = (config.get("train") or {}).get("log_every", 1)
    m = train_seconds(runs[seed], log_every) / 60
    minutes.append(f"{m:.1f}" if m < 9.95 else f"{m:.0f}")
  return " / ".join(minutes)


def curve_header(steps: list[int]) -> list[str]:
  """The first two lines of the learning-curve table at `steps`."""
  cells = ["run"] + [f"step {s}" for s in steps] + ["seeds", "budget", "commit (runs)"]
  return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def curve_table(
  groups,
  metric: str,
  steps: list[int],
  scale: float,
  digits: int,
  skip: bool,
  labels: dict | None = None,
) -> tuple[str, list, list[str]]:
  """A learning curve: one row per group, one column per step of `steps` with the metric's mean +-
  std over the group's seeds at that step, then the seeds, the budget and the commits the runs
  recorded. Runs need not be complete: a step a run has not reached yet is left blank ('-'), and
  a cell that only some of the seeds have reached says how many ('(2 of 3)'). A run without the
  metric, or one that went past a step without logging it, is an error, or with `skip` is left
  out and named."""
  labels = labels or {}
  _check_labels(labels, groups)
  skipped, commits = [], []
  lines = curve_header(steps)
  for name, runs in groups.items():
    per_seed, configs = {}, []
    for seed, workdir in runs.items():
      try:
        per_seed[seed] = [
          None if v is None else v * scale for v in values_at(workdir, metric, steps)
        ]
      except DataError as e:
        if not skip:
          raise
        skipped.append((workdir, str(e)))
        continue
      configs.append(run_config(workdir))
    if not per_seed:
      continue
    row = [labels.get(name, name)]
    for i in range(len(steps)):
      values = [v[i] for v in per_seed.values() if v[i] is not None]
      if not values:
        row.append("-")
        continue
      some = f" ({len(values)} of {len(per_seed)})" if len(values) < len(per_seed) else ""
      row.append(mean_std_cell(values, digits) + some)
    row += [str(len(per_seed)), _distinct(budget(c) for c in configs)]
    row.append(_distinct(f"`{c}`" for c in add_commits(configs, commits)))
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines), skipped, commits


def header_by_metric(names: list[str]) -> list[str]:
  """The first two lines of the table by metric whose columns are the groups `names`."""
  cells = ["metric"] + [f"{n} (mean +- std; per seed)" for n in names]
  return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def table_by_metric(
  groups, metrics: list[str], scale: float, digits: int, skip: bool, labels: dict | None = None
) -> tuple[str, list, list[str]]:
  """The table transposed: one row per metric, one column per group (mean +- std, then every
  seed's value), and under it a line per group with its seeds, budget and recorded commits. For
  many metrics of few groups, e.g. a table of searches at several budgets over one run's seeds."""
  labels = labels or {}
  _check_labels(labels, groups)
  skipped, commits, columns, notes = [], [], [], []
  for name, runs in groups.items():
    per_seed, configs = _seed_values(runs, metrics, scale, skip, skipped)
    if not per_seed:
      continue
    cells = []
    for i in range(len(metrics)):
      values = [v[i] for v in per_seed.values()]
      text = mean_std_cell(values, digits)
      if len(values) > 1:
        text += " (" + ", ".join(f"{x:.{digits}f}" for x in values) + ")"
      cells.append(text)
    label = labels.get(name, name)
    columns.append((label, cells))
    recorded = add_commits(configs, commits)
    notes.append(
      f"{label}: seeds {', '.join(per_seed)}; budget {_distinct(budget(c) for c in configs)}; "
      f"commit {_distinct(f'`{c}`' for c in recorded)}."
    )
  lines = header_by_metric([label for label, _ in columns])
  for i, metric in enumerate(metrics):
    lines.append("| " + " | ".join([metric] + [cells[i] for _, cells in columns]) + " |")
  return "\n".join(lines + [""] + notes), skipped, commits
