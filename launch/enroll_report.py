"""Tables and figures of enrollment runs, from the JSON files their enroll evaluators wrote.

    python launch/train.py --config=configs/enroll.py            # train on A, test on A' and B
    python launch/train.py --config=configs/enroll.py:reverse    # train on B, test on B' and A
    python launch/enroll_report.py --runs=runs/enroll,runs/enroll_reverse --out=docs/enroll

Reads the newest `enroll_<tag>_step<N>.json` of every evaluation of every run (or those of
--step), and the run's config.json for the names of its sources. Prints the commit, a markdown
table of every method's accuracy (ROC-AUC in brackets) per run and evaluation, and, where the
evaluation swept the known fraction of probes, a table of accuracy / F1 per prior; writes
`<out>_scaling.png` (accuracy against gallery size and walks per identity) and `<out>_prior.png`.
A run evaluated later with `launch/eval.py` has its files rewritten there, so the report follows.
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
flags.mark_flag_as_required("runs")


def main(argv):
  del argv
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    from launch import _enroll_report

    print(_enroll_report.report(_RUNS.value, _OUT.value, _STEP.value))


if __name__ == "__main__":
  app.run(main)
