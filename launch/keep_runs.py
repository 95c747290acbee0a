"""Keep finished runs' records in the repository, so that a results table outlives the workdirs.

    python launch/keep_runs.py --runs='runs/noprop_fashion/*' --into=results/noprop_fashion

A docs table is regenerated from run directories (launch/summarize_runs.py), but a workdir holds
gigabytes of checkpoints and lives on one machine. This copies what a table reads, each run's
`config.json` (its config, commit and budget) and `metrics.jsonl` (every logged value), into a
directory that is committed (with the files an evaluator wrote for a report, EVALUATOR_FILES), e.g.
`results/<table>/`, keeping each run's directory name (and, for
a multi-seed run or a sweep, its `s<seed>` and point directories, and for the stages of a
multi-stage run, `--runs='runs/T/*/stage_*'`, its `stage_k` directories; runs of one pattern that
would still share a name keep the path from the pattern's fixed part on), so that

    python launch/summarize_runs.py --runs='results/noprop_fashion/*' ...

gives the same table from a fresh clone, and a table can grow row by row as runs finish on
different machines or days. Only finished runs are kept: a run whose `--metric` (default
test/accuracy) has not been logged at its config's train.steps is an error naming it, or with
`--skip_incomplete` is left out and named. A run kept before is left as it is when its files are
the same, and is an error when they differ (a run resumed and extended, or another run of the same
name) unless `--replace`; either error stops the command before anything is copied.
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
# Files an evaluator writes beside them that a report reads (launch/enroll_report.py reads the
# enroll evaluator's), kept when the run has them.
EVALUATOR_FILES = ("enroll_*_step*.json",)

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
_INTO = flags.DEFINE_string("into", None, "Directory that keeps the runs' records.")
_METRICS = flags.DEFINE_multi_string(
  "metric", ["test/accuracy"], "Metric(s) a run must have logged at its final step."
)
_SKIP = flags.DEFINE_bool("skip_incomplete", False, "Leave out unfinished runs (and say so).")
_REPLACE = flags.DEFINE_bool("replace", False, "Overwrite a kept record that differs.")


def _outermost(match: str) -> str:
  """The workdir a matched directory belongs to: itself, or for a seed, sweep-point or stage
  directory (W/s0, W/<point>, W/stage_1) the W above it, so that its kept path keeps W's name."""
  top = os.path.abspath(match)
  while (
    _run_tables.REPLICA.fullmatch(os.path.basename(top))
    or "=" in os.path.basename(top)
    or _run_tables.STAGE.fullmatch(os.path.basename(top))
  ):
    top = os.path.dirname(top)
  return top


def _pattern_base(pattern: str) -> str:
  """The directory a pattern's matches are named from: the part before its first glob component
  (runs/T for runs/T/*/teacher), or for a pattern without one the directory holding it."""
  parts = os.path.abspath(pattern).split(os.sep)
  fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), None)
  if fixed is None:
    return os.path.dirname(os.sep.join(parts))
  return os.sep.join(parts[:fixed]) or os.sep


def _named_runs(pattern: str) -> list[tuple[str, str]]:
  """[(run directory, its kept path)] of one pattern: from its workdir's parent on (W, W/s0,
  W/<point>/s0, W/stage_1), or, where two of the pattern's runs would get the same path so
  (runs/T/*/teacher: every distillation workdir's teacher), from the pattern's fixed part on
  (<workdir>/teacher)."""
  runs = [
    (run, match)
    for match in _run_tables.matching_dirs(pattern)
    for run in _run_tables.run_dirs(match)
  ]

  def named(root_of) -> list[str]:
    return [os.path.relpath(os.path.abspath(run), root_of(match)) for run, match in runs]

  parent = lambda match: os.path.dirname(_outermost(match))  # noqa: E731
  inner = named(parent)
  if len({(i, os.path.realpath(r)) for i, (r, _) in zip(inner, runs)}) > len(set(inner)):
    base = _pattern_base(pattern)  # an ancestor of every match, as each parent is
    inner = named(lambda match: min(base, parent(match), key=len))
  return [(run, name) for (run, _), name in zip(runs, inner)]


def records(patterns: list[str]) -> list[tuple[str, str]]:
  """[(run directory, its path under the keeping directory)]: a workdir a pattern matches keeps
  its name, and a multi-seed workdir or sweep W keeps its inner layout (W/s0, W/<point>/s0, also
  when the pattern names W/s0 itself), so summarize_runs groups the kept runs as it grouped the
  originals; runs of one pattern that would share a name so keep their path from the pattern's
  fixed part on (`_named_runs`). A run named twice (by two patterns, or two spellings of its path)
  is kept once."""
  named, by_path, by_inner = [], set(), {}
  for pattern in patterns:
    for run, inner in _named_runs(pattern):
      real = os.path.realpath(run)
      if real in by_path:
        continue
      if inner in by_inner:
        raise ConfigError(f"{run} and {by_inner[inner]} would both be kept as {inner!r}")
      by_path.add(real)
      by_inner[inner] = run
      named.append((run, inner))
  return named


def record_names(run: str) -> list[str]:
  """The names of the files kept of `run`: RECORD_FILES, then the EVALUATOR_FILES it has."""
  found = [
    os.path.basename(path)
    for pattern in EVALUATOR_FILES
    for path in glob.glob(os.path.join(glob.escape(run), pattern))
  ]
  return list(RECORD_FILES) + sorted(found)


def check_finished(run: str, metrics: list[str]) -> None:
  """Raises a DataError unless every metric was logged at the run's final step (IncompleteRun
  when it was logged before; a MissingFileError when a record file is missing)."""
  for name in RECORD_FILES:
    if not os.path.exists(os.path.join(run, name)):
      raise MissingFileError(f"{run} has no {name}: not a run directory of launch/train.py")
  config = _run_tables.run_config(run)
  if (config.get("train") or {}).get("steps") is None:
    raise DataError(f"{run}/config.json has no train.steps: cannot tell whether the run finished")
  for metric in metrics:
    _run_tables.final_value(run, metric, config)


def _same(run: str, dest: str) -> bool | None:
  """None when `dest` keeps nothing yet, else whether it keeps exactly the run's record files
  (the same evaluator files too, none more)."""
  if not any(os.path.exists(os.path.join(dest, n)) for n in RECORD_FILES):
    return None
  names = record_names(run)
  return record_names(dest) == names and all(
    os.path.exists(os.path.join(dest, n))
    and filecmp.cmp(os.path.join(run, n), os.path.join(dest, n), shallow=False)
    for n in names
  )


def _conflict(run: str, dest: str) -> ConfigError:
  return ConfigError(
    f"{dest} keeps a different record than {run} (the run resumed and extended, or another run "
    "of that name); --replace overwrites it"
  )


def _copy(run: str, dest: str, same: bool | None) -> str:
  """Copies the record files unless `dest` keeps them already (`same`, from _same); returns what
  happened: 'unchanged', 'kept' or 'replaced'."""
  if same:
    return "unchanged"
  os.makedirs(dest, exist_ok=True)
  names = record_names(run)
  for stale in set(record_names(dest)) - set(names):  # a replaced record keeps none of the old
    os.remove(os.path.join(dest, stale))
  for name in names:
    shutil.copyfile(os.path.join(run, name), os.path.join(dest, name))
  return "kept" if same is None else "replaced"


def keep(run: str, dest: str, replace: bool) -> str:
  """Copies the run's record files into `dest`; returns what happened ('kept', 'unchanged',
  'replaced'). A differing record there is an error unless `replace`."""
  same = _same(run, dest)
  if same is False and not replace:
    raise _conflict(run, dest)
  return _copy(run, dest, same)


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
    except DataError as e:  # still training, stopped early, or not a run directory
      if not _SKIP.value:
        raise DataError(f"{e}; --skip_incomplete leaves unfinished runs out") from None
      skipped.append((run, str(e)))
      continue
    finished.append((run, os.path.join(_INTO.value, inner)))
  plan = [(run, dest, _same(run, dest)) for run, dest in finished]
  conflicts = [(run, dest) for run, dest, same in plan if same is False]
  if conflicts and not _REPLACE.value:  # all or nothing: stop before any copy
    raise _conflict(*conflicts[0])
  for run, dest, same in plan:
    print(f"{_copy(run, dest, same)}: {run} -> {dest}")
  for run, reason in skipped:
    print(f"skipped {run}: {reason}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
