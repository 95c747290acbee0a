"""The one canonical trainer: `train_and_evaluate(config, workdir)`, and `run_experiment`, what
launch/train.py calls (one trainer run, or a method's multi-stage experiment).

It validates the config, builds the mesh, the method, the data iterator, the optimizer and the
train state, restores the latest checkpoint if there is one, and runs the jitted step with donated
state, logging, evaluators and checkpoints. Multi-stage methods call it once per stage with their
own sub-workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxrepr import checkpoint, config as config_lib, metrics as metrics_lib, optim, parallel
from jaxrepr import profiling, workdir as workdir_lib
from jaxrepr import evaluators as evaluator_contract
from jaxrepr.methods import base as method_contract
from jaxrepr.methods.base import Method
from jaxrepr.train_step import TrainState, create_state, make_train_step, param_count
from jaxrepr.errors import ConfigError, WorkdirError


@dataclasses.dataclass
class Run:
  """Everything built from a config before the first step (shared with launch/bench.py)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  method: Method
  data: Iterator[dict[str, np.ndarray]]
  state: TrainState
  train_step: Callable  # jitted, donates the state
  train_rng: jax.Array
  eval_rng: jax.Array

  def next_batch(self) -> dict[str, jax.Array]:
    return parallel.to_global(next(self.data), self.mesh)


def _peek(data) -> dict[str, np.ndarray]:
  saved = data.get_state()
  batch = next(data)
  data.set_state(saved)
  return batch


def build(config: ml_collections.ConfigDict) -> Run:
  """Validates the config and builds the run; nothing here compiles the train step yet."""
  config_lib.validate(config)
  mesh = parallel.make_mesh(config.num_devices, config.mesh.fsdp)
  t = config.train
  parallel.check_batch_size(t.batch_size, mesh, "config.train.batch_size")
  if t.grad_accum > 1:
    parallel.check_batch_size(
      t.batch_size // t.grad_accum, mesh, "config.train.batch_size / config.train.grad_accum"
    )
  method = config_lib.method_module(config).build(config)
  data = config_lib.data_module(config).train_iterator(
    config.data,
    batch_size=t.batch_size,
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
  )
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.key(config.seed), 3)
  optimizer = optim.make_optimizer(config.optim, t.steps)
  schedule = optim.schedule(config.optim, t.steps)
  example = parallel.to_global(_peek(data), mesh)
  replicated = parallel.replicated(mesh)
  min_bytes = config.sharding.fsdp_min_bytes
  with jax.set_mesh(mesh):
    param_shardings = parallel.fsdp_shardings(
      jax.eval_shape(method.init, init_rng, example), mesh, min_bytes
    )
    params = jax.jit(method.init, out_shardings=param_shardings)(init_rng, example)
    new_state = lambda p: create_state(p, optimizer)  # noqa: E731
    state_shardings = parallel.fsdp_shardings(jax.eval_shape(new_state, params), mesh, min_bytes)
    state = jax.jit(new_state, out_shardings=state_shardings)(params)
    step_fn = jax.jit(
      make_train_step(method, optimizer, schedule, t.grad_accum),
      donate_argnums=(0,),
      out_shardings=(state_shardings, replicated),
    )
  return Run(config, mesh, method, data, state, step_fn, train_rng, eval_rng)


def build_evaluators(config, run: Run, workdir: str, names=None) -> dict[str, Any]:
  """`config.evals` (or the named subset) -> {name: Evaluator}."""
  evaluators = {}
  for name, ev in config.evals.items():
    if names is not None and name not in names:
      continue
    kwargs = evaluator_contract.evaluator_fields(ev)
    cls = config_lib.evaluator_class(name, ev)
    evaluators[name] = cls(
      config=config, method=run.method, mesh=run.mesh, workdir=workdir, **kwargs
    )
  return evaluators


def _run_evals(evaluators, config, run: Run, step: int, writer, final: bool) -> dict[str, float]:
  results = {}
  for name, evaluator in evaluators.items():
    every = config.evals[name].get("every", 0)
    if final or (every and step % every == 0):
      t0 = time.perf_counter()
      with jax.set_mesh(run.mesh):
        out = evaluator.run(run.state.params, jax.random.fold_in(run.eval_rng, step), step)
      out = {f"{name}/{k}": float(v) for k, v in out.items()}
      writer.write(step, out)
      if jax.process_index() == 0:
        shown = " ".join(f"{k}={v:.4g}" for k, v in out.items())
        print(f"eval step {step} ({time.perf_counter() - t0:.1f}s): {shown}", flush=True)
      results.update(out)
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


def _refuse_fresh_start(workdir: str, unreadable_steps: list[int]) -> None:
  """A fresh start must not write a second run's history into the metrics of an earlier one."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
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
  raise WorkdirError(
    f"{workdir} holds the metrics of an earlier run but {why}; to start over, "
    "rerun with --overwrite (moves the old workdir aside) or give another --workdir"
  )


def _keep_old_config(workdir: str, config: ml_collections.ConfigDict, start: int) -> None:
  """On a resume with a changed config, the config that trained steps 1..start stays on disk."""
  changed = metrics_lib.config_changes(workdir, config)
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
  with owned(workdir):
    return _train_and_evaluate(config, workdir)


def _has_checkpoints(directory: str) -> bool:
  # Orbax names a finished step's directory by its number.
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  t = config.train
  main = jax.process_index() == 0
  checkpoints = os.path.join(workdir, "checkpoints")
  if not _has_checkpoints(checkpoints):
    _refuse_fresh_start(workdir, [])  # before anything is built: stop at once
  run = build(config)
  # Evaluators check what they need (other runs, data files, packages) when they are built: a
  # missing prerequisite stops the run here, before anything is written into the workdir.
  evaluators = build_evaluators(config, run, workdir)
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
    _refuse_fresh_start(workdir, [s for s, _ in ckpt.skipped])
    start = 0
    if main:
      print(f"starting fresh in {workdir}", flush=True)
  else:
    start, run.state, data_state = restored
    run.data.set_state(data_state)
    if main:
      print(f"resuming from step {start} in {workdir}", flush=True)
      _keep_old_config(workdir, config, start)
  metrics_lib.write_config(workdir, config)
  if main:
    note = f" ({run.method.param_count_note})" if run.method.param_count_note else ""
    print(
      f"{config.method}: {param_count(run.state.params):,} parameters{note}; "
      f"{run.mesh.devices.size} devices over {jax.process_count()} processes; "
      f"global batch {t.batch_size}",
      flush=True,
    )

  writer = metrics_lib.MetricWriter(workdir)
  progress = metrics_lib.Progress(t.steps, start)
  last_logged: dict[str, float] = {}
  pending = None  # (step, device metrics) of the step before, fetched after the next dispatch
  stopped_by_signal = False
  t_start = time.perf_counter()

  def finish(step_and_metrics):
    nonlocal last_logged
    done, device_metrics = step_and_metrics
    scalars = metrics_lib.to_floats(parallel.fetch(device_metrics))
    metrics_lib.check_finite(done, scalars)
    if done % t.log_every == 0 or done == t.steps:
      rate = progress.report(done, scalars)
      writer.write(done, dict(scalars, steps_per_second=rate), prefix="train/")
      last_logged = scalars

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
        _run_evals(evaluators, config, run, step, writer, final=False)
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
  results = {}
  if not stopped_by_signal:
    with jax.set_mesh(run.mesh):
      results = _run_evals(evaluators, config, run, step, writer, final=True)
  ckpt.close()
  writer.close()
  summary = {
    "step": step,
    "train": last_logged,
    "eval": results,
    "workdir": workdir,
    "preempted": stopped_by_signal,
    "seconds": time.perf_counter() - t_start,
  }
  if main and not stopped_by_signal:
    _print_summary(summary, writer)
  return summary


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


def _print_summary(summary: dict, writer: metrics_lib.MetricWriter) -> None:
  lines = [f"done: {summary['step']} steps in {summary['seconds']:.1f}s"]
  if summary["train"]:
    lines.append(
      "  train: "
      + " ".join(
        f"{k}={v:.4g}"
        for k, v in sorted(summary["train"].items())
        if not k.endswith("norm") and k != "lr"
      )
    )
  for k, v in sorted(summary["eval"].items()):
    lines.append(f"  {k} = {v:.4g}")
  lines.append(
    f"  outputs: {summary['workdir']} (metrics.jsonl, tensorboard/, checkpoints/, config.json)"
  )
  print("\n".join(lines), flush=True)
