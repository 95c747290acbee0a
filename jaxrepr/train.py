"""The one canonical trainer: `train_and_evaluate(config, workdir)`, and `run_experiment`, what
launch/train.py calls (one trainer run, or a method's multi-stage experiment).

It validates the config, builds the mesh, the method, the data iterator, the optimizer and the
train state, restores the latest checkpoint if there is one, and runs the jitted step with donated
state, logging, evaluators and checkpoints. Multi-stage methods call it once per stage with their
own sub-workdir.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxrepr import checkpoint, config as config_lib, metrics as metrics_lib, parallel
from jaxrepr import budget as budget_lib, profiling, provenance, replicas as replicas_lib
from jaxrepr import workdir as workdir_lib
from jaxrepr.methods import base as method_contract
from jaxrepr.run_build import Output, Run, build, build_evaluators, outputs  # noqa: F401
from jaxrepr.train_step import param_count
from jaxrepr.errors import ConfigError, WorkdirError


def _run_evals(evaluators, out: Output, run: Run, step: int, writer, final: bool) -> dict:
  """Runs the evaluators of one trained run (a plain run, or one replica) that are due."""
  results = {}
  for name, evaluator in evaluators.items():
    every = out.config.evals[name].get("every", 0)
    if final or (every and step % every == 0):
      t0 = time.perf_counter()
      with jax.set_mesh(run.mesh):
        rng = jax.random.fold_in(out.eval_rng(run), step)
        values = evaluator.run(out.params(run.state), rng, step)
      values = {f"{name}/{k}": float(v) for k, v in values.items()}
      writer.write(step, values)
      if jax.process_index() == 0:
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        where = f" {out.name}" if out.name else ""
        print(f"eval step {step}{where} ({time.perf_counter() - t0:.1f}s): {shown}", flush=True)
      results.update(values)
  return results


def _preempted(guard: checkpoint.PreemptionGuard, step: int, log_every: int) -> bool:
  if jax.process_count() == 1:
    return guard.requested
  if step % log_every:  # processes agree on the stop step only at log steps
    return False
  flags = multihost_utils.process_allgather(np.array(guard.requested))
  return bool(np.any(flags))


def _on_process_0(action: Callable[[], None], others_message: str) -> None:
  """Runs `action` on process 0 only; if it raises there, every process raises (the others with
  `others_message`), so that none of them goes on to wait in a collective process 0 never joins."""
  error = None
  if jax.process_index() == 0:
    try:
      action()
    except Exception as e:  # noqa: BLE001 - re-raised below, after the others have heard of it
      error = e
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      error = WorkdirError(others_message)
  if error is not None:
    raise error


@contextlib.contextmanager
def owned(workdir: str):
  """Holds `workdir` for this run: process 0 takes its lock (jaxrepr/workdir.py) and every process
  stops if it could not, so a second run on the same workdir never starts."""
  took = False

  def take():
    nonlocal took
    took = workdir_lib.acquire(workdir)

  _on_process_0(take, f"{workdir}: process 0 could not take the workdir (its log says why)")
  try:
    with workdir_lib.heartbeat(workdir) if took else contextlib.nullcontext():
      yield
  finally:
    if took:
      workdir_lib.release(workdir)


def _run_dirs(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Where the runs trained by `config` write their metrics (one per replica)."""
  if not replicas_lib.is_replicated(config):
    return [workdir]
  return [os.path.join(workdir, r.name) for r in replicas_lib.replicas(config)]


def _refuse_fresh_start(
  workdir: str, unreadable_steps: list[int], run_dirs: list[str] | None = None
) -> None:
  """A fresh start must not write a second run's history into the metrics of an earlier one, nor
  abandon the runs a sweep point's directory holds (a point trained as a program of its own, as
  sweeps of a field did before it could be swept inside one program: W/<point>/checkpoints)."""
  run_dirs = run_dirs or [workdir]
  earlier = [d for d in run_dirs if os.path.exists(os.path.join(d, "metrics.jsonl"))]
  top = os.path.normpath(workdir)
  points = dict.fromkeys(os.path.normpath(os.path.dirname(d)) for d in run_dirs)
  earlier += [
    p
    for p in points
    if p != top
    and any(os.path.exists(os.path.join(p, f)) for f in ("metrics.jsonl", "checkpoints"))
  ]
  if not earlier:
    return
  steps = unreadable_steps
  why = (
    f"none of its checkpoints (steps {steps}) could be restored"
    if steps
    else "it has no checkpoint to resume from"
  )
  moved = os.path.join(workdir, checkpoint.UNREADABLE_DIR)
  if os.path.isdir(moved) and os.listdir(moved):
    why += f" (unreadable ones were moved to {moved})"
  where = workdir if earlier == [workdir] else f"{workdir} ({earlier[0]})"
  raise WorkdirError(
    f"{where} holds the metrics of an earlier run but {why}; to start over, "
    "rerun with --overwrite (moves the old workdir aside) or give another --workdir"
  )


def _keep_old_config(workdir: str, config: ml_collections.ConfigDict, start: int) -> None:
  """On a resume with a changed config, the config that trained steps 1..start stays on disk."""
  changed = metrics_lib.config_changes(workdir, config, config_lib.base_config())
  if changed:
    old, n = os.path.join(workdir, f"config.until_step{start}.json"), 1
    while os.path.exists(old):  # resumed from the same step before: keep that config too
      n += 1
      old = os.path.join(workdir, f"config.until_step{start}.{n}.json")
    os.replace(os.path.join(workdir, "config.json"), old)
    print(
      f"warning: the config differs from the one this workdir was started with: {changed} "
      f"(the earlier one is kept as {old})",
      flush=True,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns a summary.

  The workdir is this run's for the duration (a lock). A resume never starts fresh silently:
  checkpoints of another model are an error naming the first parameter that differs, unreadable
  ones are moved aside and the previous one is used, and a fresh start over an earlier run's
  metrics.jsonl is an error (launch/train.py --overwrite moves the old workdir aside)."""
  config_lib.validate(config)  # a bad config stops before anything is written
  programs = replicas_lib.programs(config)
  if len(programs) > 1:  # a sweep over fields that change shapes: one program after another
    with owned(workdir):
      return {sub: train_and_evaluate(c, os.path.join(workdir, sub)) for sub, c in programs}
  with owned(workdir):
    return _train_and_evaluate(config, workdir)


def _has_checkpoints(directory: str) -> bool:
  # Orbax names a finished step's directory by its number.
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  main = jax.process_index() == 0
  checkpoints = os.path.join(workdir, "checkpoints")
  run_dirs = _run_dirs(config, workdir)
  if not _has_checkpoints(checkpoints):
    _refuse_fresh_start(workdir, [], run_dirs)  # before anything is built: stop at once
  config, spent = budget_lib.resolve(config, workdir)
  if spent and main:
    cost = ", ".join(f"{k}={v:.4g}" for k, v in budget_lib.written_fields(spent).items())
    described = budget_lib.describe(spent["budget"])
    print(f"budget {described}: {config.train.steps} steps ({cost})", flush=True)
  t = config.train
  run = build(config)
  outs = outputs(run, workdir)
  # Evaluators check what they need (other runs, data files, packages) when they are built: a
  # missing prerequisite stops the run here, before anything is written into the workdir.
  evaluators = [build_evaluators(o.config, run, o.workdir, method=o.method) for o in outs]
  ckpt = checkpoint.Checkpointer(checkpoints, t.keep_checkpoints)
  restored = None
  if ckpt.all_steps():
    restored = ckpt.restore_latest(checkpoint.abstract_like(run.state), repair=main)
  if jax.process_count() > 1:
    # Each process reads its own shards: all must resume from the same step (or all start fresh).
    steps = multihost_utils.process_allgather(np.int32(-1 if restored is None else restored.step))
    if len(set(np.asarray(steps).tolist())) > 1:
      raise WorkdirError(
        f"{checkpoints}: the processes restored different steps "
        f"({np.asarray(steps).tolist()}, -1: none); a checkpoint is unreadable on "
        "some of them (their logs name it)"
      )
    multihost_utils.sync_global_devices("checkpoints repaired")
    ckpt.reload()  # every process sees the checkpoints process 0 moved aside
  if restored is None:
    _refuse_fresh_start(workdir, [s for s, _ in ckpt.skipped], run_dirs)
    start = 0
    if main:
      print(f"starting fresh in {workdir}", flush=True)
  else:
    start, run.state, data_state = restored
    run.data.set_state(data_state)
    if main:
      print(f"resuming from step {start} in {workdir}", flush=True)
      _keep_old_config(workdir, config, start)
  measured = budget_lib.written_fields(spent)
  commit = provenance.commit() if main else None  # one git query for every config.json
  metrics_lib.write_config(workdir, config, measured, commit)
  for o in outs if run.replicas is not None else []:
    # each replica's dir reads as a plain run
    metrics_lib.write_config(o.workdir, o.config, measured, commit)
  if main:
    note = f" ({run.method.param_count_note})" if run.method.param_count_note else ""
    count = param_count(outs[0].params(run.state))
    many = f"{len(outs)} replicas in one program, " if run.replicas is not None else ""
    print(
      f"{config.method}: {many}{count:,} parameters{' each' if many else ''}{note}; "
      f"{run.mesh.devices.size} devices over {jax.process_count()} processes; "
      f"global batch {t.batch_size}",
      flush=True,
    )

  writers = [metrics_lib.MetricWriter(o.workdir) for o in outs]
  progress = metrics_lib.Progress(t.steps, start)
  last_logged: list[dict[str, float]] = [{} for _ in outs]
  pending = None  # (step, device metrics) of the step before, fetched after the next dispatch
  stopped_by_signal = False
  t_start = time.perf_counter()

  def finish(step_and_metrics):
    done, device_metrics = step_and_metrics
    per_run = _per_run_scalars(parallel.fetch(device_metrics), outs)
    for o, scalars in zip(outs, per_run):
      metrics_lib.check_finite(done, scalars, where=o.name)
    if done % t.log_every == 0 or done == t.steps:
      shown = per_run[0] if len(outs) == 1 else _mean(per_run)
      rate = progress.report(done, shown, note=f"mean of {len(outs)}" if len(outs) > 1 else "")
      for i, (writer, scalars) in enumerate(zip(writers, per_run)):
        writer.write(done, dict(scalars, steps_per_second=rate), prefix="train/")
        last_logged[i] = scalars

  def evaluate(step, final):
    return [_run_evals(e, o, run, step, w, final) for o, e, w in zip(outs, evaluators, writers)]

  profiler = profiling.StepProfiler(
    workdir, start + config.profile_start, config.profile_steps, main
  )
  with jax.set_mesh(run.mesh), checkpoint.PreemptionGuard() as guard, profiler:
    step = start
    while step < t.steps:
      profiler.before_step(step)
      batch = run.next_batch()
      run.state, device_metrics = run.train_step(run.state, batch, run.train_rng)
      step += 1
      profiler.after_step(step, run.state)
      if pending is not None:
        finish(pending)
      pending = (step, device_metrics)
      if _preempted(guard, step, t.log_every):
        finish(pending)
        pending = None
        ckpt.save(step, run.state, run.data.get_state(), force=True)
        stopped_by_signal = True
        if main:
          print(f"{guard.signal_name}: saved a checkpoint at step {step}; exiting", flush=True)
        break
      if step == t.steps:  # the final save and evaluations follow the loop
        break
      needs_eval = any(ev.get("every", 0) and step % ev.every == 0 for ev in config.evals.values())
      if (t.checkpoint_every and step % t.checkpoint_every == 0) or needs_eval:
        finish(pending)
        pending = None
        if t.checkpoint_every and step % t.checkpoint_every == 0:
          ckpt.save(step, run.state, run.data.get_state())
        evaluate(step, final=False)
    if pending is not None:
      finish(pending)
    profiler.stop(run.state)
    if not stopped_by_signal:
      ckpt.save(step, run.state, run.data.get_state(), force=True)
      ckpt.wait()  # on disk before the guard is lifted below
      if guard.requested:
        stopped_by_signal = True
        if main:
          print(
            f"{guard.signal_name}: saved the final checkpoint at step {step}; exiting before "
            "the final evaluation",
            flush=True,
          )
  # The final evaluations run without the guard: a SIGTERM now ends the process at once (a long
  # evaluation would outlast a preemption's grace period), and a rerun resumes at the final
  # checkpoint and evaluates again.
  results = [{} for _ in outs]
  if not stopped_by_signal:
    with jax.set_mesh(run.mesh):
      results = evaluate(step, final=True)
  ckpt.close()
  for writer in writers:
    writer.close()
  summary = {
    "step": step,
    "train": last_logged[0] if len(outs) == 1 else _mean(last_logged),
    "eval": results[0] if len(outs) == 1 else _mean(results),
    "workdir": workdir,
    "preempted": stopped_by_signal,
    "seconds": time.perf_counter() - t_start,
    "budget": spent,
  }
  if run.replicas is not None:
    summary["replicas"] = {
      o.name: {"train": tr, "eval": ev} for o, tr, ev in zip(outs, last_logged, results)
    }
  if main and not stopped_by_signal:
    _print_summary(summary)
  return summary


def _per_run_scalars(fetched: dict[str, np.ndarray], outs: list[Output]) -> list[dict]:
  """Fetched step metrics -> one {name: float} per trained run (a replica's values are its row)."""
  if len(outs) == 1 and outs[0].index is None:
    return [metrics_lib.to_floats(fetched)]
  return [{k: float(np.asarray(v)[o.index]) for k, v in fetched.items()} for o in outs]


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
  keys = [k for k in rows[0] if all(k in r for r in rows)]
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def run_experiment(
  config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False
) -> dict[str, Any]:
  """Runs what `config` describes in `workdir`: one `train_and_evaluate`, or, when the config has a
  `stages` section, the method's multi-stage experiment `jaxrepr.methods.<method>.run_stages`
  (e.g. distillation: teacher, then one trainer run per stage in its own sub-workdir).

  `overwrite` first moves an existing workdir aside to `<workdir>.<timestamp>` (nothing is deleted).
  """
  if overwrite:

    def move():
      moved = workdir_lib.move_aside(workdir)
      if moved:
        print(f"moved the earlier run in {workdir} to {moved}", flush=True)

    _on_process_0(move, f"{workdir}: process 0 could not move the workdir aside (its log says why)")
  if config.get("stages") is None:
    return train_and_evaluate(config, workdir)
  module = config_lib.method_module(config)  # an unknown method: an error naming the choices
  run_stages = method_contract.stages_runner(module)
  if run_stages is None:
    raise ConfigError(
      f"config.stages is set but method {config.method!r} has no multi-stage runner "
      f"(jaxrepr.methods.{config.method}.run_stages); remove config.stages"
    )
  with owned(workdir):
    return run_stages(config, workdir, train_and_evaluate)


def _print_summary(summary: dict) -> None:
  lines = [f"done: {summary['step']} steps in {summary['seconds']:.1f}s"]
  spent = summary.get("budget") or {}
  if spent:
    total = f", {spent['total_flops']:.4g} FLOPs" if "total_flops" in spent else ""
    described = budget_lib.describe(spent["budget"])
    lines.append(f"  budget {described}: {spent['steps']} steps{total}")
  hidden = lambda k: k.endswith("norm") or k == "lr"  # noqa: E731
  replicas = summary.get("replicas")
  if replicas:
    lines.append(f"  {len(replicas)} replicas (mean, then each):")
  if summary["train"]:
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(summary["train"].items()) if not hidden(k))
    lines.append("  train: " + shown)
  for k, v in sorted(summary["eval"].items()):
    if replicas:
      values = [r["eval"][k] for r in replicas.values() if k in r["eval"]]
      lines.append(f"  {k} = {v:.4g} +- {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}")
    else:
      lines.append(f"  {k} = {v:.4g}")
  for name, r in (replicas or {}).items():
    lines.append(f"    {name}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(r["eval"].items())))
  where = "<replica>/" if replicas else ""
  lines.append(
    f"  outputs: {summary['workdir']} ({where}metrics.jsonl, {where}tensorboard/, checkpoints/, "
    "config.json)"
  )
  print("\n".join(lines), flush=True)
