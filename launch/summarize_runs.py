"""Tabulate the final value of metrics over seeds: one markdown row per run group, mean +- std.

    python launch/summarize_runs.py --runs='runs/noprop_table_mnist5k/*' --metric=test/accuracy \
        --scale=100
    python launch/summarize_runs.py --runs=runs/a_s0,runs/a_s1,runs/b_s0 --metric=test/accuracy \
        --metric=test/cross_entropy

Runs whose directory names differ only by the seed suffix (`--seed_pattern`, default `_s<digits>`
at the end) form one group. Each group's row gives the mean and the sample standard deviation
(ddof 1; blank for one seed) of each metric's value at its last logged step, the number of seeds,
and every seed's value, so a table in a README can be regenerated from the run directories. A run
that has not logged a metric yet (still training) stops the command with an error naming it, unless
`--skip_incomplete`, which lists the skipped runs instead.
"""

import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr.metrics import read_metric  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
_METRICS = flags.DEFINE_multi_string("metric", ["test/accuracy"], "Metric(s) to tabulate.")
_SEED_PATTERN = flags.DEFINE_string("seed_pattern", r"_s(\d+)$",
                                    "Regex of the seed part of a run's directory name.")
_SCALE = flags.DEFINE_float("scale", 1.0, "Multiply values by this (100 for percent).")
_DIGITS = flags.DEFINE_integer("digits", 2, "Decimals in the table.")
_SKIP = flags.DEFINE_bool("skip_incomplete", False, "Skip runs without the metric (and say so).")
flags.mark_flag_as_required("runs")


def expand(patterns: list[str]) -> list[str]:
  """Workdirs named by `patterns` (globs expanded, sorted, duplicates dropped)."""
  out = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not matches:
      raise FileNotFoundError(f"no run directory matches {pattern!r}")
    out += [m for m in matches if os.path.isdir(m) and m not in out]
  return out


def group_runs(workdirs: list[str], seed_pattern: str) -> dict[str, list[tuple[str, str]]]:
  """{group name: [(seed, workdir), ...]} in first-seen order; a name without a seed is its own
  group with seed '-'."""
  groups: dict[str, list[tuple[str, str]]] = {}
  for workdir in workdirs:
    name = os.path.basename(os.path.normpath(workdir))
    match = re.search(seed_pattern, name)
    key, seed = (name[:match.start()] + name[match.end():], match.group(1)) if match else (name, "-")
    groups.setdefault(key, []).append((seed, workdir))
  return groups


def final_value(workdir: str, metric: str) -> float:
  _, values = read_metric(workdir, metric)
  return values[-1]


def mean_std(values: list[float]) -> tuple[float, float | None]:
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


def table(groups, metrics: list[str], scale: float, digits: int, skip: bool) -> tuple[str, list]:
  """The markdown table and the list of (workdir, error) skipped."""
  skipped = []
  header = ["run"] + [f"{m} (mean +- std)" for m in metrics] + ["seeds", "per seed"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, runs in groups.items():
    per_seed: dict[str, list[float]] = {}
    for seed, workdir in runs:
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
    cells.append(", ".join(f"s{s}: " + "/".join(f"{x:.{digits}f}" for x in v)
                           for s, v in per_seed.items()))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines), skipped


def main(argv):
  del argv
  groups = group_runs(expand(_RUNS.value), _SEED_PATTERN.value)
  text, skipped = table(groups, _METRICS.value, _SCALE.value, _DIGITS.value, _SKIP.value)
  print(text)
  for workdir, err in skipped:
    print(f"skipped {workdir}: {err}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
