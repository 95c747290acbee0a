"""Multi-stage distillation runs composed from the canonical trainer: `run(config, workdir)`.

Papers: Flouro & Chadwick, "Sparse Knowledge Distillation: A Mathematical Framework for
Probability-Domain Temperature Scaling and Multi-Stage Compression" (arXiv 2601.03195), and
"Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement" (arXiv
2601.13100). Only their abstracts were available: the stage schedules below are jaxrepr's
formalisation of the claims those abstracts make.

Stage 0 trains the teacher (method 'classifier') in `workdir/teacher` (or reuses
`config.stages.teacher_workdir`). Every later stage is one `train.train_and_evaluate` call of method
'distill' in its own `workdir/stage_k`, so each stage checkpoints and resumes on its own; a stage
that finished writes `stage_k/summary.json`, and a rerun reads it instead of training again.

config.stages.kind:
  'compress'   multi-stage compression (arXiv 2601.03195, abstract, components ii-iii: a homotopy
               path of pruning stages, O(1/n) convergence in the number of stages): n =
               `num_stages` students along the path, stage k distilled from stage k-1.
               `compress='sparsity'`: the teacher's architecture, warm-started from stage k-1 and
               magnitude-pruned to kernel sparsity s_k = final_sparsity * k / n
               (`sparsity_schedule='linear'`: equal steps in s; if a stage costs C (s_k -
               s_{k-1})^2, equal steps total C s^2 / n, the O(1/n) rate) or
               1 - (1 - final_sparsity)^(k / n) ('geometric': every stage keeps the same fraction
               of the remaining weights). `compress='width'`: fresh students whose hidden widths
               (and CNN channels) are the teacher's times final_width_factor^(k / n) (a geometric
               path). n = 1 is one-shot compression to the final size.
  'recursive'  recursive anchored meta-distillation (arXiv 2601.13100): generation 0 is a student
               far from the base teacher p* (q0='soft': fitted to P_{T0}(p*) with an unsoftened
               student, so q_0 ~ P_{T0}(p*); q0='labels': trained on hard labels); generation
               k >= 1 distils the meta-teacher t_k = G(p*, q_{k-1}, alpha) (default G: alpha p* +
               (1 - alpha) q_{k-1}), warm-started from q_{k-1} if `warm_start`. The bound
               KL(p* || q_k) <= (1 - alpha)^k KL(p* || q_0) (jaxrepr's formalisation of the
               abstract's "contraction in KL divergence", see `meta_axioms`) assumes a realisable
               student; one that cannot represent t_k (a capacity-limited one) adds a
               per-generation L1 error eps, whose floor is eps / alpha.

Every student stage is evaluated by the 'distill' evaluator against the original teacher / base
teacher (KL(p_teacher || q_k) at T = 1, accuracy). `workdir/report.json` holds one row per stage
and `workdir/report.png` plots accuracy and KL per stage (with the (1 - alpha)^k KL_0 bound for
recursive runs). Stage training steps are `config.train.steps` (per stage); the teacher's are
`config.stages.teacher_steps`.
"""

from __future__ import annotations

import json
import os
from typing import Any
from collections.abc import Callable

import jax
import ml_collections

from jaxrepr.methods.distill import report as report_lib, student as student_lib
from jaxrepr.errors import ConfigError, MissingFileError

# (config, workdir) -> summary: one trainer run (jaxrepr.train.train_and_evaluate).
TrainFn = Callable[[ml_collections.ConfigDict, str], dict]

KINDS = ("compress", "recursive")


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c = config.copy_and_resolve_references()
  c.unlock()
  return c


def _eval_section(config, kind: str, reference: str | None) -> ml_collections.ConfigDict:
  test = config.evals.get("test", ml_collections.ConfigDict())
  section = dict(
    kind=kind, every=0, split=test.get("split", "test"), batch_size=test.get("batch_size", 512)
  )
  if reference is not None:
    section["reference_workdir"] = reference
  return ml_collections.ConfigDict(dict(test=section))


def teacher_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The stage-0 config: the classifier method on the same data and optimizer."""
  c = _copy(config)
  c.method = "classifier"
  c.model = ml_collections.ConfigDict(config.stages.teacher_model.to_dict())
  c.train.steps = config.stages.teacher_steps
  c.evals = _eval_section(config, "classifier", None)
  return c


def _student_config(config, reference: str, **model_fields) -> ml_collections.ConfigDict:
  c = _copy(config)
  c.method = "distill"
  for key, value in model_fields.items():
    c.model[key] = value
  c.evals = _eval_section(config, "distill", reference)
  return c


def scaled_model(model_cfg: ml_collections.ConfigDict, factor: float) -> ml_collections.ConfigDict:
  """The same architecture with every hidden width and channel count times `factor` (>= 1)."""
  c = ml_collections.ConfigDict(model_cfg.to_dict())
  c.hidden = tuple(max(1, int(round(h * factor))) for h in model_cfg.hidden)
  if "channels" in model_cfg:
    c.channels = tuple(max(1, int(round(ch * factor))) for ch in model_cfg.channels)
  return c


def _check_compress(s) -> None:
  """The compression fields, in the order a stage reads them."""
  if s.num_stages < 1:
    raise ConfigError(f"config.stages.num_stages={s.num_stages!r}: must be >= 1")
  if s.compress == "sparsity":
    if not 0.0 < s.final_sparsity < 1.0:
      raise ConfigError(f"config.stages.final_sparsity={s.final_sparsity!r}: must be in (0, 1)")
    if s.sparsity_schedule not in ("linear", "geometric"):
      raise ConfigError(
        f"config.stages.sparsity_schedule={s.sparsity_schedule!r} is not 'linear' or 'geometric'"
      )
  elif s.compress == "width":
    if not 0.0 < s.final_width_factor <= 1.0:
      raise ConfigError(
        f"config.stages.final_width_factor={s.final_width_factor!r}: must be in (0, 1]"
      )
  else:
    raise ConfigError(f"config.stages.compress={s.compress!r} is not 'sparsity' or 'width'")


def stage_sparsity(s, k: int) -> float:
  """Kernel sparsity of compression stage k of n: equal steps in s ('linear', the homotopy path
  whose quadratic stage cost gives the O(1/n) total) or equal ratios of kept weights
  ('geometric')."""
  n = s.num_stages
  if s.sparsity_schedule == "linear":
    return s.final_sparsity * k / n
  return 1.0 - (1.0 - s.final_sparsity) ** (k / n)


def _compress_stage(config, teacher_dir: str, previous: str, k: int):
  """(config, info) of compression stage k, distilled from (and for sparsity warm-started from)
  the stage before it, `previous`."""
  s = config.stages
  if s.compress == "sparsity":
    sparsity = stage_sparsity(s, k)
    cfg = _student_config(
      config,
      teacher_dir,
      student=s.teacher_model.to_dict(),
      source="teacher",
      teacher_workdir=previous,
      init_workdir=previous,
      sparsity=sparsity,
    )
    return cfg, dict(sparsity=sparsity)
  factor = s.final_width_factor ** (k / s.num_stages)
  student = scaled_model(s.teacher_model, factor)
  cfg = _student_config(
    config,
    teacher_dir,
    student=student.to_dict(),
    source="teacher",
    teacher_workdir=previous,
    sparsity=0.0,
  )
  return cfg, dict(width_factor=factor, hidden=list(student.hidden))


def _compress_plan(config, workdir: str, teacher_dir: str) -> list[dict[str, Any]]:
  _check_compress(config.stages)
  stages, previous = [], teacher_dir
  for k in range(1, config.stages.num_stages + 1):
    stage_dir = os.path.join(workdir, f"stage_{k}")
    cfg, info = _compress_stage(config, teacher_dir, previous, k)
    stages.append(dict(name=f"stage_{k}", workdir=stage_dir, config=cfg, info=info))
    previous = stage_dir
  return stages


def _q0_fields(s) -> dict[str, Any]:
  """Generation 0: fitted to P_{T0}(p*) by an unsoftened student ('soft'), or to the labels."""
  if s.q0 == "soft":
    return dict(
      source="teacher",
      temperature=s.q0_temperature,
      soften_student=False,
      kd_weight=1.0,
      ce_weight=0.0,
    )
  if s.q0 == "labels":
    return dict(source="teacher", temperature=1.0, kd_weight=0.0, ce_weight=1.0)
  raise ConfigError(f"config.stages.q0={s.q0!r} is not 'soft' or 'labels'")


def _recursive_plan(config, workdir: str, teacher_dir: str) -> list[dict[str, Any]]:
  s = config.stages
  if s.generations < 1:
    raise ConfigError(f"config.stages.generations={s.generations!r}: must be >= 1")
  q0_cfg = _student_config(config, teacher_dir, teacher_workdir=teacher_dir, **_q0_fields(s))
  stages = [
    dict(
      name="stage_0",
      workdir=os.path.join(workdir, "stage_0"),
      config=q0_cfg,
      info=dict(generation=0, q0=s.q0),
    )
  ]
  for k in range(1, s.generations + 1):
    previous = stages[-1]["workdir"]
    cfg = _student_config(
      config,
      teacher_dir,
      source="meta",
      teacher_workdir=teacher_dir,
      previous_workdir=previous,
      alpha=s.alpha,
      init_workdir=previous if s.warm_start else None,
    )
    stages.append(
      dict(
        name=f"stage_{k}",
        workdir=os.path.join(workdir, f"stage_{k}"),
        config=cfg,
        info=dict(generation=k, alpha=s.alpha),
      )
    )
  return stages


def plan(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Stages after the teacher: [{name, workdir, config, info}], in training order."""
  s = config.stages
  if s.kind not in KINDS:
    raise ConfigError(f"config.stages.kind={s.kind!r} is not one of {KINDS}")
  teacher_dir = s.teacher_workdir or os.path.join(workdir, "teacher")
  if s.kind == "compress":
    return _compress_plan(config, workdir, teacher_dir)
  return _recursive_plan(config, workdir, teacher_dir)


def _run_stage(
  train_and_evaluate: TrainFn, name: str, stage_dir: str, config, info: dict
) -> dict | None:
  """Trains one stage unless its summary exists; None if it stopped early (preempted)."""
  path = os.path.join(stage_dir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  print(f"== {name}: {stage_dir}", flush=True)
  summary = train_and_evaluate(config, stage_dir)
  if summary["preempted"]:
    return None
  frozen = student_lib.load_frozen(stage_dir)
  total = sum(int(w.size) for w in jax.tree.leaves(frozen.params))
  row = dict(
    name=name,
    workdir=stage_dir,
    step=summary["step"],
    params=total,
    nonzero_params=student_lib.count_nonzero(frozen.params),
    kernel_sparsity=student_lib.kernel_sparsity(frozen.params),
    eval={k.split("/", 1)[1]: v for k, v in summary["eval"].items()},
    **info,
  )
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(row, f, indent=2)
    os.replace(path + ".tmp", path)  # a kill mid-write must not leave a half summary behind
  return row


def run(
  config: ml_collections.ConfigDict, workdir: str, train_and_evaluate: TrainFn
) -> dict[str, Any]:
  """Trains (or resumes, or reads) every stage; writes report.json / report.png; returns the report.

  `train_and_evaluate` is the trainer's `jaxrepr.train.train_and_evaluate`, handed in by the trainer
  (`run_experiment`) so that the method never imports the trainer (no import cycle through the
  method registry).

  The report has `rows` (one per stage: accuracy, KL to the teacher, sizes; recursive runs add the
  per-generation ratio KL_k / KL_{k-1}, the rate 1 - alpha and the bound (1 - alpha)^k KL_0),
  `table` (markdown) and `complete` (False when a stage was preempted; rerun to continue).
  """
  s = config.stages
  stages = plan(config, workdir)  # validates the stage fields before any training
  if s.teacher_workdir and not os.path.exists(os.path.join(s.teacher_workdir, "config.json")):
    raise MissingFileError(
      f"{s.teacher_workdir}/config.json: config.stages.teacher_workdir names no finished run; "
      f"leave it unset to train the teacher in {workdir}/teacher, or point it at the teacher of "
      "an earlier run on the same data (`python launch/train.py "
      "--config=configs/distill.py:multistage` leaves one in runs/distill_multistage/teacher)"
    )
  rows = []
  if not s.teacher_workdir:
    teacher_dir = os.path.join(workdir, "teacher")
    row = _run_stage(train_and_evaluate, "teacher", teacher_dir, teacher_config(config), {})
  else:
    teacher_dir = s.teacher_workdir
    path = os.path.join(teacher_dir, "summary.json")
    row = json.load(open(path)) if os.path.exists(path) else None
    if row is None:  # a plain classifier workdir: describe it from its checkpoint and metrics
      frozen = student_lib.load_frozen(teacher_dir)
      row = dict(
        name="teacher",
        workdir=teacher_dir,
        step=frozen.step,
        eval=report_lib.last_eval(teacher_dir),
        params=sum(int(w.size) for w in jax.tree.leaves(frozen.params)),
        nonzero_params=student_lib.count_nonzero(frozen.params),
        kernel_sparsity=student_lib.kernel_sparsity(frozen.params),
      )
  complete = row is not None
  if complete:
    rows.append(dict(row, name="teacher"))
    for stage in stages:
      row = _run_stage(
        train_and_evaluate, stage["name"], stage["workdir"], stage["config"], stage["info"]
      )
      if row is None:
        complete = False
        break
      rows.append(row)
  recursive = s.kind == "recursive"
  if recursive and complete:
    kl0 = rows[1]["eval"]["kl_reference"]
    for k, r in enumerate(rows[1:]):
      r["rate"] = 1.0 - s.alpha
      r["bound"] = (1.0 - s.alpha) ** k * kl0
      if k > 0:
        prev = rows[k]["eval"]["kl_reference"]
        r["ratio"] = r["eval"]["kl_reference"] / prev if prev > 0 else None
  report = dict(
    kind=s.kind,
    complete=complete,
    rows=rows,
    alpha=s.alpha if recursive else None,
    table=report_lib.markdown_table(rows, recursive) if complete else "",
  )
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "report.json"), "w") as f:
      json.dump(report, f, indent=2)
    if complete:
      report_lib.plot(
        rows, recursive, s.alpha if recursive else None, os.path.join(workdir, "report.png")
      )
      print(report["table"], flush=True)
      print(
        f"report: {os.path.join(workdir, 'report.json')}, plot: "
        f"{os.path.join(workdir, 'report.png')}",
        flush=True,
      )
    else:
      print("stopped before every stage finished; rerun the same command to continue", flush=True)
  return report
