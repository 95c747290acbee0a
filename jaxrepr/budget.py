"""Compute budgets: `config.train.budget` sets the step count from examples, FLOPs, seconds or
the steps of another config.

    --config.train.budget.kind=flops --config.train.budget.value=2e12

Methods whose steps cost different amounts (NoProp's one block per step against all blocks, LPN's
Grad 0 against Grad 1 training) are compared fairly at equal compute, not at equal steps.
  steps     value > 0: that many steps; value 0 (the default): `train.steps` as given
  examples  ceil(value / train.batch_size) steps
  flops     floor(value / FLOPs of one step) steps, the FLOPs taken from XLA's cost analysis of the
            compiled step (its loop-free form, jaxrepr/step_cost.py); for replicas
            (jaxrepr/replicas.py) the budget is each replica's
  seconds   floor(value / the median time of a few steps) steps, measured on this machine when
            the run starts (the one budget that depends on the machine and its load)
  steps_of  the FLOPs of `value` steps of another config, `train.budget.reference` (a --config
            spec with that file's defaults, e.g. 'configs/noprop.py:backprop,fashion_mnist'):
            floor(value x its FLOPs per step / this step's FLOPs) steps, so that a method is
            trained at the compute of another method's run without a hand-computed FLOP count;
            the reference is costed on this run's devices and mesh (its path is read from the
            current directory, as --config's is)
The config fields and their check are in jaxrepr/config.py. The trainer resolves the budget once,
before the run is built, and keeps the result in
`<workdir>/budget.json`: a resumed run reuses it (a budget in seconds is not re-measured), and the
chosen steps and FLOPs are written into config.json (`train.steps`, `train.flops_per_step`,
`train.total_flops`, and `train.reference_flops_per_step` for steps_of) and the run's summary.
Resolving a FLOPs or seconds budget compiles the step once more than a plain run; steps_of also
compiles the reference's step (and loads its data).
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

import jax
import ml_collections

from jaxrepr import config as config_lib, replicas as replicas_lib, step_cost
from jaxrepr.errors import ConfigError, UserError

FILE = "budget.json"


def _single(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """One replica's config (the budget is per run), or the config itself."""
  if not replicas_lib.is_replicated(config):
    return config
  return replicas_lib.replicas(config)[0].config


# Fields that say on what a run executes and where its files are, not what it trains: the reference
# of a 'steps_of' budget is costed on this run's devices and mesh and reads this run's data
# directory, so that the two step costs compare like for like.
_MACHINE_FIELDS = ("num_devices", "mesh", "sharding")


def _reference_flops(config: ml_collections.ConfigDict) -> float:
  """FLOPs of one step of `train.budget.reference` (its file's defaults, this run's machine
  fields); its errors name the budget field, not fields the user never set."""
  spec = config.train.budget.reference
  try:
    reference = config_lib.load_spec(spec)
    if reference.get("stages") or reference.get("sweep"):
      raise ConfigError(
        "a multi-stage or swept config has no single step to count: name one stage's or one "
        "point's config"
      )
    with reference.unlocked():
      for field in _MACHINE_FIELDS:
        if field in config:
          reference[field] = copy.deepcopy(config[field])
      data_dir = config.get("data", {}).get("data_dir")
      if data_dir and "data_dir" in reference.get("data", {}):
        reference.data.data_dir = data_dir
    return step_cost.step_flops(_single(reference))
  except UserError as e:
    raise type(e)(f"config.train.budget.reference={spec!r}: {e}") from e


def resolve(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, dict]:
  """(config with train.steps set by the budget, what was measured); a plain step count passes
  through untouched with {}."""
  b = config.train.get("budget")
  if b is None or (b.kind == "steps" and not b.value):
    return config, {}
  spec = {"kind": b.kind, "value": float(b.value), "batch_size": config.train.batch_size}
  if b.kind == "steps_of":
    spec["reference"] = b.reference
  path = os.path.join(workdir, FILE)
  saved = None
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("budget") != spec:
      raise ConfigError(
        f"{path} resolved the budget {saved.get('budget')} for this workdir, the config asks "
        f"for {spec}; rerun with --overwrite to start over with the new budget"
      )
  if saved is not None:
    info = saved
  else:
    info = {"budget": spec}
    if b.kind == "steps":
      info["steps"] = int(b.value)
    elif b.kind == "examples":
      info["steps"] = math.ceil(b.value / config.train.batch_size)
    elif b.kind == "flops":
      info["flops_per_step"] = step_cost.step_flops(_single(config))
      if info["flops_per_step"] <= 0:
        raise ConfigError(
          "config.train.budget.kind='flops': XLA's cost analysis reports no FLOPs for this "
          "step on this backend; give the budget in steps, examples or seconds"
        )
      info["steps"] = math.floor(b.value / info["flops_per_step"])
    elif b.kind == "steps_of":
      info["reference_flops_per_step"] = _reference_flops(config)
      info["flops_per_step"] = step_cost.step_flops(_single(config))
      if min(info["reference_flops_per_step"], info["flops_per_step"]) <= 0:
        raise ConfigError(
          "config.train.budget.kind='steps_of': XLA's cost analysis reports no FLOPs for this "
          f"step or for {b.reference}'s on this backend; give the budget in steps or examples"
        )
      paid = b.value * info["reference_flops_per_step"]
      # (1 + 1e-12): N steps of a step that costs the same buy N steps, not N - 1 by rounding
      info["steps"] = math.floor(paid / info["flops_per_step"] * (1 + 1e-12))
    else:
      info["seconds_per_step"] = step_cost.step_seconds(config)
      info["steps"] = math.floor(b.value / info["seconds_per_step"])
    if info["steps"] < 1:
      cost = {k: v for k, v in info.items() if k.endswith("per_step")}
      raise ConfigError(
        f"config.train.budget ({b.kind}={b.value:g}) does not pay for one step ({cost})"
      )
    if "flops_per_step" in info:
      info["total_flops"] = info["flops_per_step"] * info["steps"]
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      with open(path, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
  resolved = copy.deepcopy(config)
  resolved.train.steps = int(info["steps"])
  return resolved, info


def describe(spec: dict) -> str:
  """A resolved budget's spec as the run prints it: 'flops=2e+12', 'steps_of=2400 of <config>'."""
  of = f" of {spec['reference']}" if spec.get("reference") else ""
  return f"{spec['kind']}={spec['value']:g}{of}"


def written_fields(info: dict) -> dict[str, float]:
  """What config.json's `train` section records of a resolved budget (not config fields)."""
  fields = ("flops_per_step", "total_flops", "seconds_per_step", "reference_flops_per_step")
  return {k: info[k] for k in fields if k in info}
