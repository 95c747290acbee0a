"""Plot one metric of several runs against the step, from their metrics.jsonl, into one PNG.

    python launch/plot_runs.py --runs=runs/classifier,runs/classifier_bf16 --metric=train/loss \
        --out=loss.png
    python launch/plot_runs.py --runs=a,b --labels=float32,bfloat16 --metric=train/loss \
        --metric=test/accuracy --out=curves.png   # one panel per metric
    python launch/plot_runs.py --runs=runs/three_seeds --out=seeds.png   # a curve per seed

A multi-seed or sweep workdir (`W/s<seed>/`, `W/<point>/s<seed>/`, launch/summarize_runs.py) is
opened into its seeds: one curve each, labelled with the workdir's label and the seed's path in it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr.metrics import read_metric  # noqa: E402
from launch import _run_tables  # noqa: E402

_RUNS = flags.DEFINE_list("runs", None, "Workdirs (each with a metrics.jsonl, or with seeds).")
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

  curves = _run_tables.labelled(_RUNS.value, _LABELS.value)
  metrics = _METRICS.value
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for label, run in curves:
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
