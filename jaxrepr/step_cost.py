"""What one train step costs: FLOPs from XLA's cost analysis of the compiled step, and seconds.

Shared by the trainer's compute budgets (jaxrepr/budget.py) and launch/bench.py.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from jaxrepr.run_build import build


def compiled_flops(compiled) -> float:
  """FLOPs of a compiled program (one device's partition) from its cost analysis (0 if none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def has_loops(config: ml_collections.ConfigDict) -> bool:
  """Whether the step of `config` runs loops that `loop_free` removes."""
  model = config.get("model")
  return model is not None and (
    model.get("attention", "xla") != "xla"
    or model.get("train_latent", {}).get("per_position", False)
  )


def loop_free(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same step without its memory-saving loops (the same arithmetic): XLA's cost analysis
  counts a loop body once, so the blocked attention's loops over blocks (`model.attention`) and
  LPN's loop over leave-one-out positions (`train_latent.per_position`) would hide most FLOPs."""
  plain = config.copy_and_resolve_references()
  if has_loops(plain):
    with plain.unlocked():
      plain.model.attention = "xla"
      if "train_latent" in plain.model:
        plain.model.train_latent.per_position = False
  return plain


def step_flops(config: ml_collections.ConfigDict) -> float:
  """FLOPs of one train step of `config` over all devices (its loop-free form is compiled)."""
  run = build(loop_free(config))
  batch = run.next_batch()
  with jax.set_mesh(run.mesh):
    compiled = run.train_step.lower(run.state, batch, run.train_rng).compile()
  return compiled_flops(compiled) * run.mesh.devices.size


def step_seconds(config: ml_collections.ConfigDict, steps: int = 3) -> float:
  """Median wall seconds of one train step of `config` after one untimed step (a throwaway run)."""
  run = build(config)
  batch = run.next_batch()
  state, times = run.state, []
  with jax.set_mesh(run.mesh):
    state, _ = run.train_step(state, batch, run.train_rng)
    jax.block_until_ready(state)
    for _ in range(steps):
      t0 = time.perf_counter()
      state, metrics = run.train_step(state, batch, run.train_rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  return float(np.median(times))
