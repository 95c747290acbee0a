"""Figures of the enroll evaluator's results: accuracy against gallery size and walks per identity
(the "scales with data" question) and accuracy/F1 against the known fraction of probes.

Both read the evaluator's metrics dict (`{method}_acc_nid{n}`, `{method}_acc_w{w}`,
`{method}_accuracy_known{pct}`, `{method}_f1_known{pct}`, see _enroll_decide.py), so the figure of
one evaluation (`Evaluator._save`) and the figure over several runs (launch/enroll_report.py) are
drawn by the same code from the same numbers.
"""

from __future__ import annotations

from jaxrepr.evaluators._enroll_decide import LABELS, METHODS, prior_tag


def _style(name: str) -> dict:
  return dict(marker="o", label=LABELS[name], linestyle="--" if "oracle" in name else "-")


def _names(metrics: dict, key: str) -> list[str]:
  return [m for m in METHODS if key.format(m=m) in metrics]


def _same_y(axes) -> None:
  """One y range for both panels (each autoscaled on its own lines first), so they compare."""
  lims = [ax.get_ylim() for ax in axes]
  for ax in axes:
    ax.set_ylim(min(lo for lo, _ in lims), max(hi for _, hi in lims))


def scaling_axes(axes, metrics: dict, n_ids: list[int], walks: list[int], title: str) -> None:
  """Two axes: accuracy per gallery size (n_id) and per walks per identity, every method."""
  for ax, key, grid, xlabel in (
    (axes[0], "nid", n_ids, "gallery identities n_id"),
    (axes[1], "w", walks, "walks per identity"),
  ):
    for name in _names(metrics, "{m}_acc_" + key + str(grid[0])):
      ax.plot(grid, [metrics[f"{name}_acc_{key}{g}"] for g in grid], **_style(name))
    ax.set_xlabel(xlabel)
    ax.set_xscale("log", base=2)
    ax.set_xticks(grid, [str(g) for g in grid])
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy")
  _same_y(axes)
  axes[0].set_title(title, fontsize=9, loc="left")


def prior_axes(axes, metrics: dict, priors: list[float], title: str) -> None:
  """Two axes: accuracy and F1 (known = positive) per known fraction of the probes."""
  for ax, metric in zip(axes, ("accuracy", "f1")):
    for name in _names(metrics, "{m}_" + metric + "_" + prior_tag(priors[0])):
      ax.plot(priors, [metrics[f"{name}_{metric}_{prior_tag(p)}"] for p in priors], **_style(name))
    ax.set_xlabel("known fraction of probes")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].set_title(title, fontsize=9, loc="left")


def figure(rows: list[dict], path: str, kind: str) -> None:
  """One row of two panels per result: `kind` 'scaling' (rows need metrics, n_ids, walks, title)
  or 'prior' (metrics, priors, title). Written to `path` (PNG)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
  for ax_row, row in zip(axes, rows):
    if kind == "scaling":
      scaling_axes(ax_row, row["metrics"], row["n_ids"], row["walks"], row["title"])
    else:
      prior_axes(ax_row, row["metrics"], row["priors"], row["title"])
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
