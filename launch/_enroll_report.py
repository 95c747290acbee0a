"""Tables and figures of enrollment runs from the JSON files their enroll evaluators wrote (the
library part of launch/enroll_report.py, which documents the output)."""

import glob
import json
import os
import re

_FILE = re.compile(r"enroll_(?P<tag>.+)_step(?P<step>\d+)\.json$")


def find_results(workdir: str, step: int | None = None) -> list[dict]:
  """The evaluator records of `workdir`, one per evaluation tag, at `step` or the newest step."""
  from jaxrepr.errors import MissingFileError

  newest: dict[str, tuple[int, str]] = {}
  for path in glob.glob(os.path.join(workdir, "enroll_*_step*.json")):
    m = _FILE.search(os.path.basename(path))
    s = int(m["step"])
    if (step is None or s == step) and s >= newest.get(m["tag"], (-1, ""))[0]:
      newest[m["tag"]] = (s, path)
  if not newest:
    at = f" at step {step}" if step is not None else ""
    raise MissingFileError(
      f"{workdir}: no enroll_<tag>_step<N>.json{at}; train the run, or evaluate it with "
      "`python launch/eval.py --config=<its config> --workdir=<it>`"
    )
  records = []
  for tag, (_, path) in sorted(newest.items()):
    with open(path) as f:
      records.append(dict(json.load(f), tag=tag, path=path))
  return records


def describe(spec: dict) -> str:
  """A short name of a source spec: 'vmf d=64 seed 0', 'npz emb.npz', with the identity split."""
  if spec["kind"] == "vmf":
    name = f"vmf d={spec['dim']} seed {spec['seed']}"
  else:
    name = f"{spec['kind']} {os.path.basename(str(spec.get('path') or spec.get('workdir')))}"
  return name + {"test": " (held-out ids)", "train": " (training ids)"}.get(spec["split"], "")


def rows_of(workdirs: list[str], step: int | None) -> list[dict]:
  from jaxrepr.errors import MissingFileError

  rows = []
  for workdir in workdirs:
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
      raise MissingFileError(f"{cfg_path}: not found; is {workdir} an enrollment run?")
    with open(cfg_path) as f:
      config = json.load(f)
    train = describe(dict(config["data"]["source"], split="all"))  # always its training ids
    for rec in find_results(workdir, step):
      ev = config["evals"].get(rec["tag"])
      test = describe(ev["source"]) if ev else rec["tag"]
      rows.append(
        dict(
          rec,
          run=os.path.basename(os.path.normpath(workdir)),
          title=f"train {train} -> test {test}",
        )
      )
  return rows


def _fmt(x) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def main_table(rows: list[dict]) -> str:
  from jaxrepr.evaluators._enroll_decide import LABELS, METHODS

  names = [m for m in METHODS if any(f"{m}_accuracy" in r["metrics"] for r in rows)]
  lines = [
    "| run | evaluation | step | " + " | ".join(LABELS[m] for m in names) + " |",
    "|---|---|---|" + "---|" * len(names),
  ]
  for r in rows:
    met = r["metrics"]
    cells = []
    for m in names:
      acc, auc = met.get(f"{m}_accuracy"), met.get(f"{m}_auc")
      cells.append(_fmt(acc) + (f" ({auc:.3f})" if auc is not None else ""))
    lines.append(f"| {r['run']} | {r['title']} | {r['step']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def prior_table(rows: list[dict]) -> str:
  from jaxrepr.evaluators._enroll_decide import LABELS, METHODS, prior_tag

  rows = [r for r in rows if r.get("known_fractions")]
  if not rows:
    return ""
  names = [m for m in METHODS if any(f"{m}_accuracy" in r["metrics"] for r in rows)]
  lines = [
    "| run | evaluation | known fraction | " + " | ".join(LABELS[m] for m in names) + " |",
    "|---|---|---|" + "---|" * len(names),
  ]
  for r in rows:
    for p in r["known_fractions"]:
      met, t = r["metrics"], prior_tag(p)
      cells = [
        f"{_fmt(met.get(f'{m}_accuracy_{t}'))} / {_fmt(met.get(f'{m}_f1_{t}'))}" for m in names
      ]
      lines.append(f"| {r['run']} | {r['title']} | {p:g} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def run_commits(workdirs: list[str]) -> list[str]:
  """The commits the runs' config.json recorded, in order without repeats."""
  from launch import _run_tables

  commits: list[str] = []
  _run_tables.add_commits([_run_tables.run_config(w) for w in workdirs], commits)
  return commits


def report(workdirs: list[str], out: str, step: int | None = None) -> str:
  """Writes the figures; returns the markdown tables (module docstring)."""
  from jaxrepr.evaluators import _enroll_plot

  rows = rows_of(workdirs, step)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  for r in rows:
    r["label"] = f"{r['run']}: {r['title']}"
  _enroll_plot.figure([dict(r, title=r["label"]) for r in rows], f"{out}_scaling.png", "scaling")
  swept = [
    dict(r, title=r["label"], priors=r["known_fractions"]) for r in rows if r.get("known_fractions")
  ]
  if swept:
    _enroll_plot.figure(swept, f"{out}_prior.png", "prior")
  text = ["Accuracy (ROC-AUC):", "", main_table(rows)]
  if swept:
    text += ["", "Accuracy / F1 (known = positive) per known fraction of probes:", ""]
    text += [prior_table(rows)]
  return "\n".join(text)
