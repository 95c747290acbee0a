"""Tables of multi-stage distillation runs (configs/distill.py), read from their stage directories.

A distillation workdir W holds one trainer run per stage, `W/stage_k` (and usually `W/teacher`);
each stage's config.json carries the run's `stages` section (kind, number of stages, schedule,
alpha) and its metrics.jsonl the 'distill' evaluator's final test metrics: accuracy, KL(teacher ||
student) at T = 1 (`test/kl_reference`) and the teacher's own accuracy (`test/reference_accuracy`).
So a table needs only each stage's config.json and metrics.jsonl, which launch/keep_runs.py keeps
(`--runs='runs/T/*/stage_*'`), never the checkpoints or report.json.

Two tables, by the runs' `stages.kind`:
  compress   one row per workdir: the final student (stage n) of n stages with its schedule;
  recursive  one row per workdir: KL(p* || q_k) of every generation k = 0..G, the range of the
             per-generation ratios KL_k / KL_{k-1} beside the rate 1 - alpha the anchored
             meta-teacher's bound allows, and the last generation's accuracy.
Rows are ordered by data set, then what the last stage is compressed to (sparsity or width, in
increasing order), schedule and n (compress), or student width and alpha (recursive, wider and
larger alpha first), not by directory name.
"""

import os

from jaxrepr.errors import ConfigError, DataError, MissingFileError
from launch import _run_tables

DATASETS = ("digits", "mnist5k", "fashion_mnist")
DATA_NAMES = {"digits": "digits", "mnist5k": "MNIST-5k", "fashion_mnist": "Fashion-MNIST"}


def stage_dirs(workdir: str) -> list[str]:
  """W/stage_k in the order of k; a directory without any is an error naming it."""
  names = (
    [n for n in os.listdir(workdir) if _run_tables.STAGE.fullmatch(n)]
    if os.path.isdir(workdir)
    else []
  )
  if not names:
    raise MissingFileError(f"{workdir}: no stage_<k> directories (not a distillation workdir)")
  names.sort(key=lambda n: int(_run_tables.STAGE.fullmatch(n).group(1)))
  return [os.path.join(workdir, n) for n in names]


def _expected_stages(stages: dict) -> list[int]:
  """The stage numbers a finished run has: 1..n (compression), 0..G (recursive generations)."""
  if stages["kind"] == "recursive":
    return list(range(stages["generations"] + 1))
  return list(range(1, stages["num_stages"] + 1))


def _stage_config(stage_dir: str) -> dict:
  """A stage's config.json, which must hold the run's `stages` section."""
  if not os.path.exists(os.path.join(stage_dir, "config.json")):
    raise MissingFileError(f"{stage_dir}/config.json does not exist: the stage has not started")
  config = _run_tables.run_config(stage_dir)
  if "stages" not in config:
    raise DataError(f"{stage_dir}/config.json has no 'stages' section (not a distillation stage)")
  return config


def read_run(workdir: str) -> dict:
  """One workdir's stages: its `stages` config, data set, student width, commit, steps per stage,
  and per stage (in order) the final accuracy, KL to the teacher and the teacher's accuracy. An
  unfinished run (a stage missing or stopped before its last step) is an error naming it."""
  dirs = stage_dirs(workdir)
  configs = [_stage_config(d) for d in dirs]
  config, stages = configs[-1], configs[-1]["stages"]
  found = [int(_run_tables.STAGE.fullmatch(os.path.basename(d)).group(1)) for d in dirs]
  expected = _expected_stages(stages)
  if found != expected:
    error = _run_tables.IncompleteRun if set(found) < set(expected) else DataError
    raise error(f"{workdir}: has stages {found}, a finished {stages['kind']} run has {expected}")
  rows = []
  for d, stage_config in zip(dirs, configs):
    rows.append(
      {
        m: _run_tables.final_value(d, f"test/{m}", stage_config)
        for m in ("accuracy", "kl_reference", "reference_accuracy")
      }
    )
  return dict(
    workdir=workdir,
    stages=stages,
    data=config["data"]["dataset"],
    hidden=tuple(config["model"]["student"]["hidden"]),
    steps=config["train"]["steps"],
    commits=list(dict.fromkeys(str(c["commit"]) for c in configs if c.get("commit"))),
    rows=rows,
  )


def _commits(run: dict) -> str:
  return " / ".join(f"`{c}`" for c in run["commits"]) or "-"


def _data_order(run: dict) -> int:
  return DATASETS.index(run["data"]) if run["data"] in DATASETS else len(DATASETS)


def _schedule(stages: dict) -> str:
  """The compression path: 'linear' / 'geometric' sparsity, 'width', or '-' for one stage."""
  if stages["num_stages"] == 1:
    return "-"
  return "width" if stages["compress"] == "width" else stages["sparsity_schedule"]


_SCHEDULES = ("-", "linear", "geometric", "width")


def _target(stages: dict) -> str:
  """What the last stage is compressed to: '97% sparsity' or 'width x 0.0312'."""
  if stages["compress"] == "width":
    return f"width x {stages['final_width_factor']:.3g}"
  return f"{100 * stages['final_sparsity']:.3g}% sparsity"


def compress_table(runs: list[dict]) -> str:
  """One row per run: the final student of n stages."""

  def order(r):
    s = r["stages"]
    final = s["final_width_factor"] if s["compress"] == "width" else s["final_sparsity"]
    return _data_order(r), s["compress"], final, _SCHEDULES.index(_schedule(s)), s["num_stages"]

  lines = [
    "| data | compressed to | stages n | schedule | teacher accuracy | accuracy "
    "| KL(teacher ‖ student) | steps per stage | commit (runs) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in sorted(runs, key=order):
    s, last = r["stages"], r["rows"][-1]
    n = f"{s['num_stages']}" + (" (one-shot)" if s["num_stages"] == 1 else "")
    lines.append(
      f"| {DATA_NAMES.get(r['data'], r['data'])} | {_target(s)} | {n} | {_schedule(s)} | "
      f"{last['reference_accuracy']:.3f} | {last['accuracy']:.3f} | {_kl(last['kl_reference'])} | "
      f"{r['steps']} | {_commits(r)} |"
    )
  return "\n".join(lines)


def ratio_range(kls: list[float]) -> str:
  """'0.48-0.51': the smallest and largest KL_k / KL_{k-1} (one value when they round alike)."""
  ratios = [b / a for a, b in zip(kls, kls[1:]) if a > 0]
  if not ratios:
    return "-"
  low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
  return low if low == high else f"{low}-{high}"


def _kl(x: float) -> str:
  """Three significant digits, trailing zeros kept (0.0255, 0.200, 1.44): KLs span decades."""
  return f"{x:#.3g}"


def recursive_table(runs: list[dict]) -> str:
  """One row per run: every generation's KL(p* || q_k), the ratios against the 1 - alpha rate."""
  runs = sorted(runs, key=lambda r: (_data_order(r), -max(r["hidden"]), -r["stages"]["alpha"]))
  generations = {len(r["rows"]) - 1 for r in runs}
  k = f"k = 0..{generations.pop()}" if len(generations) == 1 else "k = 0, 1, ..."
  lines = [
    f"| data | student hidden | alpha | KL(p_base ‖ q_k), {k} | per-step ratio | bound 1 - alpha "
    "| accuracy of the last q_k | steps per generation | commit (runs) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in runs:
    kls = [row["kl_reference"] for row in r["rows"]]
    alpha = r["stages"]["alpha"]
    lines.append(
      f"| {DATA_NAMES.get(r['data'], r['data'])} | {', '.join(map(str, r['hidden']))} | "
      f"{alpha:g} | {', '.join(map(_kl, kls))} | {ratio_range(kls)} | {1 - alpha:g} | "
      f"{r['rows'][-1]['accuracy']:.3f} | {r['steps']} | {_commits(r)} |"
    )
  return "\n".join(lines)


def table(workdirs: list[str]) -> tuple[str, list[str]]:
  """The markdown table of the distillation workdirs (all of one kind; one named twice, in any
  spelling, is one row) and the commits their stages recorded."""
  seen, runs = set(), []
  for workdir in workdirs:
    if os.path.realpath(workdir) not in seen:
      seen.add(os.path.realpath(workdir))
      runs.append(read_run(workdir))
  kinds = sorted({r["stages"]["kind"] for r in runs})
  if len(kinds) != 1:
    named = ", ".join(f"{r['workdir']}: {r['stages']['kind']}" for r in runs)
    raise ConfigError(f"one table holds runs of one kind of distillation, got {named}")
  commits = list(dict.fromkeys(c for r in runs for c in r["commits"]))
  text = recursive_table(runs) if kinds[0] == "recursive" else compress_table(runs)
  return text, commits
