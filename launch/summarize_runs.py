"""Tabulate the final value of metrics over seeds: one markdown row per run group, mean +- std.

    python launch/summarize_runs.py --runs='runs/noprop_table_mnist5k/*' --metric=test/accuracy \
        --scale=100
    python launch/summarize_runs.py --runs=runs/a_s0,runs/a_s1,runs/b_s0 --metric=test/accuracy \
        --metric=test/cross_entropy

Runs in the same parent directory whose names differ only by the seed suffix (`--seed_pattern`, a
regex with one group for the seed, default `_s<digits>` at the end) form one group; a run without a
seed suffix is a group of its own. Each group's row gives the mean and the sample standard
deviation (ddof 1; blank for one seed) of each metric's value at the run's last logged step, the
number of seeds, and every seed's value, so a table in a README can be regenerated from the run
directories. A run is complete when its metric reaches the `train.steps` of its config.json; a run
that is not (still training, or stopped before its final evaluation) stops the command with an
error naming it, unless `--skip_incomplete`, which lists the skipped runs instead.
"""

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr import errors  # noqa: E402
from jaxrepr.errors import ConfigError, DataError, MissingFileError  # noqa: E402
from jaxrepr.metrics import read_metric  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
_METRICS = flags.DEFINE_multi_string("metric", ["test/accuracy"], "Metric(s) to tabulate.")
_SEED_PATTERN = flags.DEFINE_string(
  "seed_pattern", r"_s(\d+)$", "Regex of the seed part of a run's directory name (one group)."
)
_SCALE = flags.DEFINE_float("scale", 1.0, "Multiply values by this (100 for percent).")
_DIGITS = flags.DEFINE_integer("digits", 2, "Decimals in the table.")
_SKIP = flags.DEFINE_bool("skip_incomplete", False, "Skip unfinished runs (and say so).")
flags.mark_flag_as_required("runs")


class IncompleteRun(DataError):
  """A run has not logged the metric at its final step."""


def expand(patterns: list[str]) -> list[str]:
  """Workdirs named by `patterns` (globs expanded and sorted, duplicates dropped); a pattern that
  names nothing is an error."""
  out = []
  for pattern in patterns:
    matches = [m for m in sorted(glob.glob(pattern)) if os.path.isdir(m)]
    if not matches:
      raise MissingFileError(f"no run directory matches {pattern!r}")
    out += [m for m in matches if m not in out]
  return out


def group_runs(workdirs: list[str], seed_pattern: str) -> dict[str, dict[str, str]]:
  """{group name: {seed: workdir}} in first-seen order. The name is the directory name without its
  seed (prefixed by the parent when two parents hold the same name); a run without a seed keeps its
  whole name and seed '-'. The same seed twice in a group is an error."""
  regex = re.compile(seed_pattern)
  if regex.groups != 1:
    raise ConfigError(f"--seed_pattern={seed_pattern!r} must have exactly one group (the seed)")
  keyed = []
  for workdir in workdirs:
    parent, name = os.path.split(os.path.normpath(workdir))
    match = regex.search(name)
    base, seed = (
      (name[: match.start()] + name[match.end() :], match.group(1)) if match else (name, "-")
    )
    keyed.append(((parent, base, match is not None), seed, workdir))
  parents = {}
  for (parent, base, seeded), _, _ in keyed:
    parents.setdefault((base, seeded), set()).add(parent)
  groups: dict[str, dict[str, str]] = {}
  for (parent, base, seeded), seed, workdir in keyed:
    name = base if len(parents[(base, seeded)]) == 1 else os.path.join(parent, base)
    if not seeded and any(b == base and s for (b, s) in parents):
      name += " (no seed)"
    runs = groups.setdefault(name, {})
    if seed in runs:
      raise ConfigError(f"{workdir} and {runs[seed]} are both seed {seed} of group {name!r}")
    runs[seed] = workdir
  return groups


def final_value(workdir: str, metric: str) -> float:
  """The metric at its last logged step; IncompleteRun when that step is before the config's
  train.steps (config.json without train.steps: the last logged value is taken as final)."""
  steps, values = read_metric(workdir, metric)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      total = json.load(f).get("train", {}).get("steps")
    if total is not None and steps[-1] < total:
      raise IncompleteRun(f"{workdir}: {metric} last logged at step {steps[-1]} of {total}")
  return values[-1]


def mean_std(values: list[float]) -> tuple[float, float | None]:
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def table(groups, metrics: list[str], scale: float, digits: int, skip: bool) -> tuple[str, list]:
  """The markdown table and the list of (workdir, reason) skipped."""
  skipped = []
  header = ["run"] + [f"{m} (mean +- std)" for m in metrics] + ["seeds", "per seed"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, runs in groups.items():
    per_seed: dict[str, list[float]] = {}
    for seed, workdir in runs.items():
      try:
        per_seed[seed] = [final_value(workdir, m) * scale for m in metrics]
      except (FileNotFoundError, ValueError) as e:
        if not skip:
          raise
        skipped.append((workdir, str(e)))
    if not per_seed:
      continue
    cells = [name]
    for i in range(len(metrics)):
      mean, std = mean_std([v[i] for v in per_seed.values()])
      cells.append(f"{mean:.{digits}f}" + ("" if std is None else f" +- {std:.{digits}f}"))
    cells.append(str(len(per_seed)))
    cells.append(
      ", ".join(f"s{s}: " + "/".join(f"{x:.{digits}f}" for x in v) for s, v in per_seed.items())
    )
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines), skipped


def main(argv):
  del argv
  with errors.reported(flags.FLAGS.verbosity):
    _summarize()


def _summarize():
  groups = group_runs(expand(_RUNS.value), _SEED_PATTERN.value)
  text, skipped = table(groups, _METRICS.value, _SCALE.value, _DIGITS.value, _SKIP.value)
  print(text)
  for workdir, reason in skipped:
    print(f"skipped {workdir}: {reason}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
