"""Everything built from a config before the first step: mesh, method, data, train state, the
jitted step (`build`), and the evaluators and output directories of each run it trains.

A plain config builds one run. A config with `seeds` or an in-program `sweep`
(jaxrepr/replicas.py) builds R replicas stacked on a leading axis: R data iterators, the
single-run initialisation vmapped over R keys, and the single-run step vmapped over the replicas
(with each replica's optimizer hyperparameters and swept loss coefficients as its arguments).
The trainer (jaxrepr/train.py), launch/bench.py and launch/eval.py share it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np

from jaxrepr import config as config_lib, optim, parallel, replicas as replicas_lib
from jaxrepr import evaluators as evaluator_contract
from jaxrepr.errors import ConfigError
from jaxrepr.methods.base import Method
from jaxrepr.train_step import TrainState, create_state, make_replica_step, make_train_step


@dataclasses.dataclass
class Run:
  """The built run (shared with launch/bench.py and launch/eval.py)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  method: Method
  data: Iterator[dict[str, np.ndarray]]
  state: TrainState
  train_step: Callable  # jitted, donates the state
  train_rng: jax.Array
  eval_rng: jax.Array
  # None for a plain run; else the replicas, in the order of the state's leading axis
  replicas: list[replicas_lib.Replica] | None = None

  def next_batch(self) -> dict[str, jax.Array]:
    return parallel.to_global(next(self.data), self.mesh, replica_axis=self.replicas is not None)


def _peek(data) -> dict[str, np.ndarray]:
  saved = data.get_state()
  batch = next(data)
  data.set_state(saved)
  return batch


def _data(config: ml_collections.ConfigDict, seed: int):
  t = config.train
  return config_lib.data_module(config).train_iterator(
    config.data,
    batch_size=t.batch_size,
    seed=seed,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
  )


def _keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, eval) keys of the run of `seed`: one split, so a replica gets the same keys."""
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.key(seed), 3)
  return init_rng, train_rng, eval_rng


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
  if replicas_lib.is_replicated(config):
    return _build_replicas(config, mesh, method)
  data = _data(config, config.seed)
  init_rng, train_rng, eval_rng = _keys(config.seed)
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


def _build_replicas(config: ml_collections.ConfigDict, mesh, method: Method) -> Run:
  t = config.train
  reps = replicas_lib.replicas(config)
  data = replicas_lib.StackedIterator([_data(r.config, r.seed) for r in reps])
  keys = [_keys(r.seed) for r in reps]
  init_rngs, train_rngs, eval_rngs = (jax.numpy.stack(k) for k in zip(*keys))
  hparams = replicas_lib.hyperparameters(reps)
  coefficients = replicas_lib.coefficients(reps)
  if coefficients and method.swept_loss is None:
    raise ConfigError(
      f"config.sweep: {sorted(coefficients)} are in the SWEEPABLE of method {config.method!r}, "
      "but its build() gives no Method.swept_loss to take them"
    )
  if coefficients and method.step_loss is not None:
    raise ConfigError(
      f"config.sweep: {sorted(coefficients)} swept in one program with method "
      f"{config.method!r}, whose loss changes with the step (Method.step_loss): sweep them as "
      "separate runs"
    )
  make_opt = lambda h: optim.make_optimizer(config.optim, t.steps, h)  # noqa: E731
  make_schedule = lambda h: optim.schedule(config.optim, t.steps, h)  # noqa: E731
  example = parallel.to_global(_peek(data), mesh, replica_axis=True)
  replicated = parallel.replicated(mesh)
  min_bytes = config.sharding.fsdp_min_bytes
  one = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)  # noqa: E731
  init = jax.vmap(method.init)
  with jax.set_mesh(mesh):
    # FSDP splits each leaf as in a single run; the replica axis stays whole on every device.
    param_shapes = jax.eval_shape(init, init_rngs, example)
    param_shardings = parallel.with_replica_axis(
      parallel.fsdp_shardings(one(param_shapes), mesh, min_bytes)
    )
    params = jax.jit(init, out_shardings=param_shardings)(init_rngs, example)
    new_state = jax.vmap(lambda p, h: create_state(p, make_opt(h)))
    state_shapes = jax.eval_shape(new_state, params, hparams)
    state_shardings = parallel.with_replica_axis(
      parallel.fsdp_shardings(one(state_shapes), mesh, min_bytes)
    )
    state = jax.jit(new_state, out_shardings=state_shardings)(params, hparams)
    step = make_replica_step(method, make_opt, make_schedule, t.grad_accum)
    step_fn = jax.jit(
      lambda s, b, r: step(s, b, r, hparams, coefficients),
      donate_argnums=(0,),
      out_shardings=(state_shardings, replicated),
    )
  return Run(config, mesh, method, data, state, step_fn, train_rngs, eval_rngs, reps)


@dataclasses.dataclass
class Output:
  """One trained run's view of a build: where it writes, its config, and how to read its params
  (a plain run: the state itself; a replica: its slice of the stacked state)."""

  name: str  # '' for a plain run, else the replica's directory name
  workdir: str
  config: ml_collections.ConfigDict
  index: int | None  # the replica's position on the leading axis
  # the method as built from this run's own config: what its evaluators use (a method may bind
  # seed-dependent pieces, such as the generation key of on-device data, when it is built)
  method: Method

  def params(self, state: TrainState) -> Any:
    if self.index is None:
      return state.params
    return jax.tree.map(lambda x: x[self.index], state.params)

  def eval_rng(self, run: Run) -> jax.Array:
    return run.eval_rng if self.index is None else run.eval_rng[self.index]


def outputs(run: Run, workdir: str) -> list[Output]:
  if run.replicas is None:
    return [Output("", workdir, run.config, None, run.method)]
  return [
    Output(
      r.name,
      os.path.join(workdir, r.name),
      r.config,
      i,
      config_lib.method_module(r.config).build(r.config),
    )
    for i, r in enumerate(run.replicas)
  ]


def build_evaluators(
  config, run: Run, workdir: str, names=None, method: Method | None = None
) -> dict[str, Any]:
  """`config.evals` (or the named subset) -> {name: Evaluator}; for a replica, pass its own
  config, run directory and method (`Output.config`, `.workdir`, `.method`)."""
  evaluators = {}
  for name, ev in config.evals.items():
    if names is not None and name not in names:
      continue
    kwargs = evaluator_contract.evaluator_fields(ev)
    cls = config_lib.evaluator_class(name, ev)
    evaluators[name] = cls(
      config=config, method=method or run.method, mesh=run.mesh, workdir=workdir, **kwargs
    )
  return evaluators
