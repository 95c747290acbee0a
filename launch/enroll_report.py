"""Tables and figures of enrollment runs, from the JSON files their enroll evaluators wrote.

    python launch/train.py --config=configs/enroll.py            # train on A, test on A' and B
    python launch/train.py --config=configs/enroll.py:reverse    # train on B, test on B' and A
    python launch/enroll_report.py --runs=runs/enroll,runs/enroll_reverse --out=docs/enroll

Reads the newest `enroll_<tag>_step<N>.json` of every evaluation of every run (or those of
--step), and the run's config.json for the names of its sources. Prints the commit of this
checkout, a markdown table of every method's accuracy (ROC-AUC in brackets) per run and
evaluation, and, where the evaluation swept the known fraction of probes, a table of accuracy / F1
per prior; writes `<out>_scaling.png` (accuracy against gallery size and walks per identity) and
`<out>_prior.png`. A run evaluated later with `launch/eval.py` has its files rewritten there, so
the report follows.

`--into=docs/enroll.md --marker=NAME` also writes the tables into the page's block between
`<!-- NAME:start -->` and `<!-- NAME:end -->`, with the command that regenerates them and the
commits (this checkout's, the runs'). The runs' records, evaluator files included, are kept in the
repository with `python launch/keep_runs.py --runs=runs/enroll,runs/enroll_reverse
--into=results/enroll --metric=same/set_accuracy`, so the report is regenerated from
`--runs=results/enroll/enroll,results/enroll/enroll_reverse` on a fresh clone.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs of enrollment runs.")
_OUT = flags.DEFINE_string(
  "out", "enroll", "Figure path prefix: <out>_scaling.png, <out>_prior.png"
)
_STEP = flags.DEFINE_integer("step", None, "The evaluated step to report (default: the newest).")
_INTO = flags.DEFINE_string("into", None, "Docs page whose --marker block the tables replace.")
_MARKER = flags.DEFINE_string("marker", None, "Name of the block of --into (NAME:start/end).")
flags.mark_flag_as_required("runs")
_FLAGS = (_RUNS, _OUT, _STEP, _INTO, _MARKER)


def main(argv):
  del argv
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    from launch import _doc_tables, _enroll_report

    _doc_tables.check_into(_INTO.value, _MARKER.value)
    text = _enroll_report.report(_RUNS.value, _OUT.value, _STEP.value)
    print(f"commit `{_doc_tables.commit()}`\n\n{text}")
    if _INTO.value:
      command = _doc_tables.command_line("launch/enroll_report.py", _FLAGS)
      commits = _enroll_report.run_commits(_RUNS.value)
      body = _doc_tables.results_block(
        text, command, _doc_tables.commit(), commits, [], commit_column=False
      )
      _doc_tables.write_into(_INTO.value, _MARKER.value, body)


if __name__ == "__main__":
  app.run(main)
