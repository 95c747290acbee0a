"""Tabulate the final value of metrics over seeds: one markdown row per run group, mean +- std.

    python launch/summarize_runs.py --runs='runs/noprop_table_mnist5k/*' --metric=test/accuracy \
        --scale=100
    python launch/summarize_runs.py --runs=runs/a_s0,runs/a_s1,runs/b_s0 --metric=test/accuracy \
        --metric=test/cross_entropy
    python launch/summarize_runs.py --runs=runs/sweep --scale=100 --into=docs/PAGE.md --marker=NAME

Run groups, in the layouts the trainer writes:
  * a multi-seed run (`--config.seeds=0,1,2`) keeps each seed in `W/s<seed>/`: naming W (or
    `W/s*`) gives one group, named after W;
  * a sweep keeps each point's seeds in `W/<point>/s<seed>/` (a point is named `field=value,...`;
    fields that change the program nest the in-program points: `W/<point>/<point>/s<seed>/`):
    naming W gives one group per point, named after the point;
  * separate runs in one parent directory whose names differ only by the seed suffix
    (`--seed_pattern`, a regex with one group for the seed, default `_s<digits>` at the end) form
    one group; a run without a seed suffix is a group of its own.
A pattern may name several such workdirs (`--runs='runs/table/*'`). Each group's row gives the mean
and the sample standard deviation (ddof 1; blank for one seed) of each metric's value at the run's
last logged step, the number of seeds, every seed's value, the budget (train.steps x
train.batch_size, and train.budget / train.total_flops where the runs' config.json has them) and the
commit the runs recorded (a `commit` field of their config.json), so a README table is regenerated
from the run directories. A run is complete when its metric reaches the `train.steps` of its
config.json; a run that is not (still training, or stopped before its final evaluation) stops the
command with an error naming it, unless `--skip_incomplete`, which leaves it out and says so.
`--train_time` adds a column of each seed's minutes in its training loop, read from the step rates
it logged (compilation and the evaluations during training included, the final one not; for seeds
trained as one program, each seed's figure is the whole program's time).

`--at_steps=400,800,...` tabulates a learning curve instead: the one --metric at each of those
steps, one column per step (mean +- std over each group's seeds), e.g. to show where a baseline
plateaus. Runs need not be complete: a step a run has not reached yet is blank ('-'), or counted
over the seeds that have reached it ('(2 of 3)'); a run without the metric is an error (or, with
`--skip_incomplete`, is left out and named).

`--by=metric` turns the table round: one row per metric, one column per group with the mean +- std
and every seed's value, and a line per group under it with its seeds, budget and commits (for many
metrics of one run's seeds, e.g. the searches of an equal-budget table).

The table goes to stdout; `--out=FILE` writes it into FILE, and `--into=docs/PAGE.md --marker=NAME`
replaces the block between the page's `<!-- NAME:start -->` and `<!-- NAME:end -->` lines (which
must be there) and keeps the rest of the page. Both carry, beside the table, the command that
regenerates it (this one, with its flags) and the commit of this checkout at the time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr import errors  # noqa: E402
from jaxrepr.errors import ConfigError  # noqa: E402
from launch import _doc_tables, _run_tables  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
_METRICS = flags.DEFINE_multi_string("metric", ["test/accuracy"], "Metric(s) to tabulate.")
_SEED_PATTERN = flags.DEFINE_string(
  "seed_pattern", r"_s(\d+)$", "Regex of the seed part of a run's directory name (one group)."
)
_SCALE = flags.DEFINE_float("scale", 1.0, "Multiply values by this (100 for percent).")
_DIGITS = flags.DEFINE_integer("digits", 2, "Decimals in the table.")
_SKIP = flags.DEFINE_bool("skip_incomplete", False, "Skip unfinished runs (and say so).")
_LABELS = flags.DEFINE_multi_string("label", [], "GROUP=TEXT: show group GROUP's row as TEXT.")
_OUT = flags.DEFINE_string("out", None, "Also write the table (and its command) into this file.")
_INTO = flags.DEFINE_string("into", None, "Docs page whose --marker block the table replaces.")
_MARKER = flags.DEFINE_string("marker", None, "Name of the block of --into (NAME:start/end).")
_BY = flags.DEFINE_enum(
  "by", "group", ["group", "metric"], "One row per run group (columns: metrics) or per metric."
)
_TRAIN_TIME = flags.DEFINE_bool(
  "train_time", False, "Add a column of each seed's minutes in its training loop."
)
_AT_STEPS = flags.DEFINE_list(
  "at_steps",
  None,
  "A learning curve: the one --metric at each of these steps (one column per step) instead of "
  "its final value; a run still training is read at the steps it has logged.",
)
flags.mark_flag_as_required("runs")
_FLAGS = (
  _RUNS,
  _METRICS,
  _SEED_PATTERN,
  _SCALE,
  _DIGITS,
  _SKIP,
  _LABELS,
  _BY,
  _TRAIN_TIME,
  _AT_STEPS,
  _OUT,
  _INTO,
  _MARKER,
)


def command() -> str:
  """The command line that regenerates the table: this script with the flags it was given (paths
  inside the checkout relative to its root, which is where to run it from; the metric is said
  even when it is the default)."""
  return _doc_tables.command_line("launch/summarize_runs.py", _FLAGS, always=("metric",))


def main(argv):
  del argv
  with errors.reported(flags.FLAGS.verbosity):
    _summarize()


def _summarize():
  _doc_tables.check_into(_INTO.value, _MARKER.value)
  groups = _run_tables.group_runs(_run_tables.expand(_RUNS.value), _SEED_PATTERN.value)
  labels = _run_tables.parse_labels(_LABELS.value, groups)
  if _AT_STEPS.value:
    text, skipped, commits = _curve(groups, labels)
  elif _BY.value == "group":
    text, skipped, commits = _run_tables.table(
      groups, _METRICS.value, _SCALE.value, _DIGITS.value, _SKIP.value, labels, _TRAIN_TIME.value
    )
  else:
    if _TRAIN_TIME.value:
      raise ConfigError("--train_time adds a column to the table of groups, not to --by=metric")
    text, skipped, commits = _run_tables.table_by_metric(
      groups, _METRICS.value, _SCALE.value, _DIGITS.value, _SKIP.value, labels
    )
  print(text)
  for workdir, reason in skipped:
    print(f"skipped {workdir}: {reason}", file=sys.stderr)
  body = _doc_tables.results_block(text, command(), _doc_tables.commit(), commits, skipped)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(body + "\n")
    print(f"wrote {_OUT.value}", file=sys.stderr)
  if _INTO.value:
    _doc_tables.write_into(_INTO.value, _MARKER.value, body)


def _curve(groups, labels):
  if len(_METRICS.value) != 1 or _BY.value != "group" or _TRAIN_TIME.value:
    raise ConfigError(
      "--at_steps tabulates one --metric, one row per group (not --by=metric or --train_time)"
    )
  try:
    steps = [int(s) for s in _AT_STEPS.value]
  except ValueError:
    raise ConfigError(f"--at_steps takes step numbers, got {_AT_STEPS.value}") from None
  return _run_tables.curve_table(
    groups, _METRICS.value[0], steps, _SCALE.value, _DIGITS.value, _SKIP.value, labels
  )


if __name__ == "__main__":
  app.run(main)
