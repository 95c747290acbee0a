"""Plot the final value of a metric against a config field of the runs, one line per group, into a
PNG.

    python launch/plot_sweep.py --runs='runs/contrastive_xor/*' --x=data.p_hat \
        --metric=test/accuracy --group=model.objective --label=clip='pairwise CLIP' \
        --reference=xor_bayes --out=docs/contrastive_xor.png
    python launch/plot_sweep.py --runs=runs/lr_sweep --x=optim.lr --log_x --spread=std --out=lr.png

Each run directory (globs expanded, multi-seed and sweep workdirs opened into their seeds as
launch/summarize_runs.py opens them) gives one value: the metric at its last logged step, which
must be the config's train.steps (an unfinished run is an error, or left out and named with
`--skip_incomplete`). Its x is the field `--x` of its config.json (a dotted path); `--group` (a
field too) splits the runs into lines, named by the field's value (`--label=VALUE=TEXT` renames
one).
The runs of one group at one x are the seeds of one point: the line goes through their mean, with
the spread over seeds as a min-max band (`--spread=minmax`, the default), error bars of the sample
standard deviation (`--spread=std`) or nothing (`--spread=none`). Runs of one point that differ in
another field than the seed are an error naming the field (group by it, or select the runs).

`--reference=NAME` adds the curve of a function of the runs' config fields (REFERENCES below), e.g.
`xor_bayes`, the Bayes-optimal accuracy 2^-d_v + p_hat (1 - 2^-d_v) of the XOR data
(jaxrepr/data/xor_modalities.py), evaluated at each run's data.d_v and data.p_hat; one curve per
value of its fields other than x.

The command prints each line's points (x, mean, min, max, seeds) and writes the PNG, which carries
the command (metadata 'Description', paths relative to the checkout's root) and this checkout's
commit ('Comment') for the docs to state beside the figure.
"""

import collections
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from jaxrepr.data import xor_modalities  # noqa: E402
from jaxrepr.errors import ConfigError, DataError, MissingFileError  # noqa: E402
from jaxrepr.metrics import NOT_CONFIG  # noqa: E402
from launch import _doc_tables, _run_tables  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Reference:
  """A curve computed from config fields: `fn(*values of fields)`."""

  label: str
  fields: tuple[str, ...]
  fn: Callable[..., float]


REFERENCES = {
  "xor_bayes": Reference(
    "Bayes optimal", ("data.d_v", "data.p_hat"), xor_modalities.bayes_accuracy
  ),
}
# Fields in which the seeds of one point may differ.
_SEED_FIELDS = ("seed", "seeds", *NOT_CONFIG)


def _define_flags() -> None:
  """The command-line flags, defined only when this file runs as a script: the tests import its
  functions into processes where other launchers' flags (`--out`) are already defined."""
  global _RUNS, _X, _METRIC, _GROUP, _LABELS, _SPREAD, _REFERENCES, _LOG_X, _SKIP, _TITLE, _OUT
  global _FLAGS
  _RUNS = flags.DEFINE_list("runs", None, "Workdirs or glob patterns of workdirs.")
  _X = flags.DEFINE_string("x", None, "Config field on the x axis (dotted path, e.g. data.p_hat).")
  _METRIC = flags.DEFINE_string("metric", "test/accuracy", "Metric whose final value is plotted.")
  _GROUP = flags.DEFINE_string("group", None, "Config field whose values are the lines.")
  _LABELS = flags.DEFINE_multi_string("label", [], "VALUE=TEXT: show the line of VALUE as TEXT.")
  _SPREAD = flags.DEFINE_enum("spread", "minmax", ["minmax", "std", "none"], "Spread over seeds.")
  _REFERENCES = flags.DEFINE_multi_enum("reference", [], list(REFERENCES), "Reference curves.")
  _LOG_X = flags.DEFINE_bool("log_x", False, "Logarithmic x axis.")
  _SKIP = flags.DEFINE_bool("skip_incomplete", False, "Leave out unfinished runs (and say so).")
  _TITLE = flags.DEFINE_string("title", "", "Figure title.")
  _OUT = flags.DEFINE_string("out", "sweep.png", "Output PNG.")
  flags.mark_flags_as_required(["runs", "x"])
  _FLAGS = (_RUNS, _X, _METRIC, _GROUP, _LABELS, _SPREAD, _REFERENCES, _LOG_X, _SKIP, _TITLE, _OUT)


@dataclasses.dataclass
class Point:
  """The runs of one group at one x: {seed: final value} and their directories."""

  x: object
  values: dict = dataclasses.field(default_factory=dict)
  runs: dict = dataclasses.field(default_factory=dict)
  configs: dict = dataclasses.field(default_factory=dict)

  @property
  def mean(self) -> float:
    return _run_tables.mean_std(list(self.values.values()))[0]

  @property
  def std(self) -> float | None:
    return _run_tables.mean_std(list(self.values.values()))[1]


def field(config: dict, name: str, workdir: str):
  """The value of the dotted field `name` of a run's config.json; an error names the run, the
  field and the fields that are there."""
  node, path = config, []
  for part in name.split("."):
    if not isinstance(node, dict) or part not in node:
      if not config:
        raise MissingFileError(f"{workdir} has no config.json to read {name!r} from")
      where = ".".join(path) or "the config"
      have = sorted(node) if isinstance(node, dict) else f"a {type(node).__name__}"
      raise ConfigError(f"{workdir}/config.json has no field {name!r} ({where} has {have})")
    node, path = node[part], path + [part]
  return node


def _flat(config: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    if isinstance(value, dict) and value:
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _differ(a: dict, b: dict) -> list[str]:
  """The fields other than the seed's in which two configs differ."""
  fa, fb = _flat(a), _flat(b)
  keys = sorted(set(fa) | set(fb))
  return [
    k for k in keys if k not in _SEED_FIELDS and fa.get(k, "<absent>") != fb.get(k, "<absent>")
  ]


def sweep(
  workdirs: list[str], x: str, metric: str, group: str | None = None, skip: bool = False
) -> tuple[dict[str, list[Point]], list[tuple[str, str]]]:
  """({group value: its points in x order}, [(workdir, why left out)]). A group value is the text
  of the group field's value ('' without a group field), groups in the order first seen."""
  if not workdirs:
    raise MissingFileError("no run directories given")
  lines: dict[str, dict] = {}
  skipped = []
  for workdir in workdirs:
    config = _run_tables.run_config(workdir)
    x_value = field(config, x, workdir)
    name = "" if group is None else str(field(config, group, workdir))
    try:
      value = _run_tables.final_value(workdir, metric, config)
    except _run_tables.IncompleteRun as e:
      if not skip:
        raise
      skipped.append((workdir, str(e)))
      continue
    key = json.dumps(x_value, sort_keys=True)
    point = lines.setdefault(name, {}).setdefault(key, Point(x_value))
    seed = config.get("seed", "-")
    if point.configs:
      other_seed, other = next(iter(point.configs.items()))
      if fields := _differ(other, config):
        raise ConfigError(
          f"{workdir} and {point.runs[other_seed]} are one point ({x}={x_value}"
          + ("" if group is None else f", {group}={name}")
          + f") but differ in {', '.join(fields)}: group by it or select the runs"
        )
    if seed in point.runs:
      raise DataError(f"{workdir} and {point.runs[seed]} are both seed {seed} of one point")
    point.values[seed], point.runs[seed], point.configs[seed] = value, workdir, config
  if not lines:
    raise DataError(f"no finished run of {metric!r} to plot ({len(skipped)} left out)")
  numeric = all(_is_number(p.x) for points in lines.values() for p in points.values())
  order = (lambda p: p.x) if numeric else (lambda p: str(p.x))
  return {n: sorted(points.values(), key=order) for n, points in lines.items()}, skipped


def _is_number(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def reference_curves(name: str, lines: dict[str, list[Point]], x: str) -> dict[str, list]:
  """{legend label: [(x, value)] in x order} of the reference `name` at the runs' configs: one
  curve per value of its fields other than `x`."""
  ref = REFERENCES[name]
  curves: dict[tuple, dict] = collections.defaultdict(dict)
  for points in lines.values():
    for point in points:
      for seed, config in point.configs.items():
        values = [field(config, f, point.runs[seed]) for f in ref.fields]
        fixed = tuple((f, v) for f, v in zip(ref.fields, values) if f != x)
        curves[fixed][json.dumps(point.x)] = (point.x, ref.fn(*values))
  out = {}
  for fixed, at in curves.items():
    suffix = ", ".join(f"{f}={v}" for f, v in fixed)
    label = ref.label + (f" ({suffix})" if len(curves) > 1 and suffix else "")
    out[label] = sorted(at.values(), key=lambda p: p[0] if _is_number(p[0]) else str(p[0]))
  return out


def command() -> str:
  """This command line, with the paths inside the checkout relative to its root."""
  args = []
  for flag in _FLAGS:
    if not flag.present and flag.name not in ("metric", "out"):
      continue
    for arg in flags.FLAGS[flag.name].serialize().splitlines():
      name, eq, value = arg.partition("=")
      if eq and flag.name == "runs":
        value = ",".join(map(_doc_tables.checkout_relative, value.split(",")))
      elif eq and flag.name == "out":
        value = _doc_tables.checkout_relative(value)
      args.append(shlex.quote(name + eq + value))
  return " ".join(["python launch/plot_sweep.py", *args])


def plot(lines, references, x, metric, labels, spread, log_x, title, out, metadata) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  xs_all = sorted({str(p.x) for points in lines.values() for p in points})
  numeric = all(_is_number(p.x) for points in lines.values() for p in points)
  pos = (lambda v: v) if numeric else (lambda v: xs_all.index(str(v)))
  fig, ax = plt.subplots(figsize=(5.6, 3.8))
  for name, points in lines.items():
    xs = [pos(p.x) for p in points]
    means = [p.mean for p in points]
    seeds = sorted({len(p.values) for p in points})
    text = labels.get(name, name or metric)
    text += f" ({'-'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''})"
    if spread == "std":
      err = [p.std or 0.0 for p in points]
      ax.errorbar(xs, means, yerr=err, marker="o", ms=3.5, lw=1.4, capsize=3, label=text)
    else:
      (line,) = ax.plot(xs, means, marker="o", ms=3.5, lw=1.4, label=text)
      if spread == "minmax":
        lo = [min(p.values.values()) for p in points]
        hi = [max(p.values.values()) for p in points]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.25, lw=0)
  for i, (text, curve) in enumerate(references.items()):
    style = ("--", ":", "-.")[i % 3]
    ax.plot([pos(a) for a, _ in curve], [b for _, b in curve], "k" + style, lw=1.1, label=text)
  if not numeric:
    ax.set_xticks(range(len(xs_all)), xs_all)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(x)
  ax.set_ylabel(metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(out, dpi=110, metadata=metadata)
  plt.close(fig)


def main(argv):
  del argv
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    _main()


def _main():
  workdirs = _run_tables.expand(_RUNS.value)
  lines, skipped = sweep(workdirs, _X.value, _METRIC.value, _GROUP.value, _SKIP.value)
  labels = _run_tables.parse_labels(_LABELS.value, lines)
  references = {}
  for name in dict.fromkeys(_REFERENCES.value):
    references.update(reference_curves(name, lines, _X.value))
  cmd, commit = command(), _doc_tables.commit()
  print(f"{cmd}\n(commit {commit})")
  for name, points in lines.items():
    print(f"{labels.get(name, name or _METRIC.value)}: x, mean, min, max, seeds")
    for p in points:
      v = p.values.values()
      print(f"  {p.x}\t{p.mean:.4g}\t{min(v):.4g}\t{max(v):.4g}\t{len(v)}")
  for workdir, reason in skipped:
    print(f"left out, incomplete: {workdir} ({reason})")
  metadata = {"Description": cmd, "Comment": f"commit {commit}"}
  args = (_X.value, _METRIC.value, labels, _SPREAD.value, _LOG_X.value, _TITLE.value)
  plot(lines, references, *args, _OUT.value, metadata)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
