"""Tabulate multi-stage distillation runs: the final student of each compression path, or every
generation of a recursive run.

    python launch/summarize_distill.py --runs='runs/distill_digits/n*'
    python launch/summarize_distill.py --runs='results/distill_digits/recursive_*' \
        --into=docs/distill.md --marker=distill-digits-recursive

Each of --runs (workdirs or glob patterns) is the workdir of one `configs/distill.py` run, holding
its stages as `stage_k/` (the teacher's directory is not read: every stage logs the teacher's
accuracy). All runs of one table are of one kind: compression (`:multistage`, `:oneshot`, `:width`;
one row per run: n stages, the schedule, the final student's accuracy and KL(teacher || student))
or recursive (`:recursive`; one row per run: KL(p* || q_k) of every generation, the range of the
per-generation ratios beside the rate 1 - alpha of the anchored meta-teacher's bound, and the last
generation's accuracy). A run that has not finished every stage is an error naming it.

Every stage's record is its config.json and metrics.jsonl, so the runs can be kept in the
repository with `python launch/keep_runs.py --runs='runs/T/*/stage_*' --into=results/T` and the
table regenerated from `results/T/*`. The table goes to stdout; `--into=PAGE --marker=NAME`
replaces the block between the page's `<!-- NAME:start -->` and `<!-- NAME:end -->` lines, with the
command that regenerates it and the commit of this checkout beside it (as launch/summarize_runs.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr import errors  # noqa: E402
from launch import _distill_tables, _doc_tables, _run_tables  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Distillation workdirs or glob patterns of them.")
_INTO = flags.DEFINE_string("into", None, "Docs page whose --marker block the table replaces.")
_MARKER = flags.DEFINE_string("marker", None, "Name of the block of --into (NAME:start/end).")
flags.mark_flag_as_required("runs")
_FLAGS = (_RUNS, _INTO, _MARKER)


def main(argv):
  del argv
  with errors.reported(flags.FLAGS.verbosity):
    _doc_tables.check_into(_INTO.value, _MARKER.value)
    workdirs = [m for pattern in _RUNS.value for m in _run_tables.matching_dirs(pattern)]
    text, commits = _distill_tables.table(workdirs)
    print(text)
    if _INTO.value:
      command = _doc_tables.command_line("launch/summarize_distill.py", _FLAGS)
      body = _doc_tables.results_block(text, command, _doc_tables.commit(), commits, [])
      _doc_tables.write_into(_INTO.value, _MARKER.value, body)


if __name__ == "__main__":
  app.run(main)
