"""Plot one metric of several runs against the step, from their metrics.jsonl, into one PNG.

    python launch/plot_runs.py --runs=runs/classifier,runs/classifier_bf16 --metric=train/loss \
        --out=loss.png
    python launch/plot_runs.py --runs=a,b --labels=float32,bfloat16 --metric=train/loss \
        --metric=test/accuracy --out=curves.png   # one panel per metric
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr.metrics import read_metric  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs (each with a metrics.jsonl).")
_LABELS = flags.DEFINE_list("labels", None, "Legend labels (default: the workdir names).")
_METRICS = flags.DEFINE_multi_string("metric", ["train/loss"], "Metric(s) to plot.")
_TITLE = flags.DEFINE_string("title", "", "Figure title.")
_OUT = flags.DEFINE_string("out", "runs.png", "Output PNG.")
flags.mark_flag_as_required("runs")


def main(argv):
  del argv
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    _plot()


def _plot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = _LABELS.value or [os.path.basename(os.path.normpath(r)) for r in _RUNS.value]
  if len(labels) != len(_RUNS.value):
    raise app.UsageError(f"{len(labels)} labels for {len(_RUNS.value)} runs")
  metrics = _METRICS.value
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for run, label in zip(_RUNS.value, labels):
      steps, values = read_metric(run, metric)
      ax.plot(steps, values, label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  if _TITLE.value:
    fig.suptitle(_TITLE.value)
  fig.tight_layout()
  fig.savefig(_OUT.value, dpi=110)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
