"""Keep finished runs' records in the repository, so that a results table outlives the workdirs.

    python launch/keep_runs.py --runs='runs/noprop_fashion/*' --into=results/noprop_fashion

A docs table is regenerated from run directories (launch/summarize_runs.py), but a workdir holds
gigabytes of checkpoints and lives on one machine. This copies what a table reads, each run's
`config.json` (its config, commit and budget) and `metrics.jsonl` (every logged value), into a
directory that is committed, e.g. `results/<table>/`, keeping each run's directory name (and, for
a multi-seed run or a sweep, its `s<seed>` and point directories), so that

    python launch/summarize_runs.py --runs='results/noprop_fashion/*' ...

gives the same table from a fresh clone, and a table can grow row by row as runs finish on
different machines or days. Only finished runs are kept: a run whose `--metric` (default
test/accuracy) has not been logged at its config's train.steps is an error naming it, or with
`--skip_incomplete` is left out and named. A run kept before is left as it is when its files are
the same, and is an error when they differ (a run resumed and extended, or another run of the same
name) unless `--replace`.
"""

import filecmp
import glob
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr import errors  # noqa: E402
from jaxrepr.errors import ConfigError, DataError, MissingFileError  # noqa: E402
from launch import _run_tables  # noqa: E402

# What a results table reads from a run directory; checkpoints and TensorBoard files stay behind.
RECORD_FILES = ("config.json", "metrics.jsonl")

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
_INTO = flags.DEFINE_string("into", None, "Directory that keeps the runs' records.")
_METRICS = flags.DEFINE_multi_string(
  "metric", ["test/accuracy"], "Metric(s) a run must have logged at its final step."
)
_SKIP = flags.DEFINE_bool("skip_incomplete", False, "Leave out unfinished runs (and say so).")
_REPLACE = flags.DEFINE_bool("replace", False, "Overwrite a kept record that differs.")


def records(patterns: list[str]) -> list[tuple[str, str]]:
  """[(run directory, its path under the keeping directory)]: a workdir a pattern matches keeps
  its name, and a multi-seed workdir or sweep W keeps its inner layout (W/s0, W/<point>/s0), so
  summarize_runs groups the kept runs as it grouped the originals."""
  named, seen = [], {}
  for pattern in patterns:
    matches = [m for m in sorted(glob.glob(pattern)) if os.path.isdir(m)]
    if not matches:
      raise MissingFileError(f"no run directory matches {pattern!r}")
    for match in matches:
      for run in _run_tables.run_dirs(match):
        inner = os.path.normpath(
          os.path.join(os.path.basename(os.path.normpath(match)), os.path.relpath(run, match))
        )
        if seen.get(inner, run) != run:
          raise ConfigError(f"{run} and {seen[inner]} would both be kept as {inner!r}")
        if inner not in seen:
          seen[inner] = run
          named.append((run, inner))
  return named


def check_finished(run: str, metrics: list[str]) -> None:
  """Raises IncompleteRun (a DataError) unless every metric was logged at the run's final step,
  MissingFileError when a record file is missing."""
  for name in RECORD_FILES:
    if not os.path.exists(os.path.join(run, name)):
      raise MissingFileError(f"{run} has no {name}: not a run directory of launch/train.py")
  config = _run_tables.run_config(run)
  if (config.get("train") or {}).get("steps") is None:
    raise DataError(f"{run}/config.json has no train.steps: cannot tell whether the run finished")
  for metric in metrics:
    _run_tables.final_value(run, metric, config)


def keep(run: str, dest: str, replace: bool) -> str:
  """Copies the run's record files into `dest`; returns what happened ('kept', 'unchanged',
  'replaced'). A differing record there is an error unless `replace`."""
  existing = [n for n in RECORD_FILES if os.path.exists(os.path.join(dest, n))]
  if existing:
    same = all(
      os.path.exists(os.path.join(dest, n))
      and filecmp.cmp(os.path.join(run, n), os.path.join(dest, n), shallow=False)
      for n in RECORD_FILES
    )
    if same:
      return "unchanged"
    if not replace:
      raise ConfigError(
        f"{dest} already keeps a different record of {os.path.basename(dest)} (a resumed or "
        "another run of that name); --replace overwrites it"
      )
  os.makedirs(dest, exist_ok=True)
  for name in RECORD_FILES:
    shutil.copyfile(os.path.join(run, name), os.path.join(dest, name))
  return "replaced" if existing else "kept"


def main(argv):
  del argv
  with errors.reported(flags.FLAGS.verbosity):
    _keep()


def _keep():
  if not _RUNS.value or not _INTO.value:
    raise ConfigError("--runs and --into are both needed: the runs, and where to keep them")
  finished, skipped = [], []
  for run, inner in records(_RUNS.value):
    try:
      check_finished(run, _METRICS.value)
    except _run_tables.IncompleteRun as e:
      if not _SKIP.value:
        raise DataError(f"{e}; --skip_incomplete leaves unfinished runs out") from None
      skipped.append((run, str(e)))
      continue
    finished.append((run, inner))
  for run, inner in finished:
    dest = os.path.join(_INTO.value, inner)
    print(f"{keep(run, dest, _REPLACE.value)}: {run} -> {dest}")
  for run, reason in skipped:
    print(f"skipped {run}: {reason}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
