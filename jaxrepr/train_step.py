"""The train state and the one jitted train step.

The step is a pure function `(state, batch, rng) -> (state, metrics)`: it folds the step number
into the run's training key (DESIGN rule 5), computes the method's loss and gradients (averaged
over `grad_accum` micro-batches when asked), applies the optax update, and returns scalar metrics:
the method's own plus loss, learning rate and gradient / parameter / update norms.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import optax

from jaxrepr.methods.base import Batch, Method, Metrics

LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, Metrics]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps done so far
  params: Any
  opt_state: Any


def create_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def _split_micro(batch: Batch, num_micro: int) -> Batch:
  """(B, ...) -> (num_micro, B / num_micro, ...), micro-batch i = rows i, i + A, i + 2A, ...

  Strided rows keep every micro-batch evenly spread over the devices that hold the batch, so the
  split moves no data between devices.
  """

  def split(x):
    b = x.shape[0]
    return jnp.swapaxes(x.reshape((b // num_micro, num_micro) + x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def _loss_and_grads(
  loss_fn: LossFn, params: Any, batch: Batch, rng: jax.Array, num_micro: int
) -> tuple[jax.Array, Metrics, Any]:
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_micro == 1:
    (loss, metrics), grads = grad_fn(params, batch, rng)
    return loss, metrics, grads

  def body(carry, micro):
    i, micro_batch = micro
    (loss, metrics), grads = grad_fn(params, micro_batch, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

  zeros = jax.tree.map(
    lambda s: jnp.zeros(s.shape, s.dtype),
    jax.eval_shape(
      lambda: grad_fn(params, jax.tree.map(lambda x: x[0], _split_micro(batch, num_micro)), rng)
    ),
  )
  (loss, metrics), grads = zeros
  total, _ = jax.lax.scan(
    body, (loss, metrics, grads), (jnp.arange(num_micro), _split_micro(batch, num_micro))
  )
  return jax.tree.map(lambda x: x / num_micro, total)


def loss_at_step(method: Method, step: jax.Array) -> LossFn:
  """The loss train step `step` minimises: `method.loss`, or for a method whose loss changes
  during training (`Method.step_loss`) that loss at this step."""
  if method.step_loss is None:
    return method.loss
  return lambda params, batch, rng: method.step_loss(params, batch, rng, step)


def make_train_step(
  method: Method,
  optimizer: optax.GradientTransformation,
  lr_schedule: Callable[[jax.Array], jax.Array],
  grad_accum: int = 1,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    loss_fn = loss_at_step(method, state.step)
    return _train_step(loss_fn, optimizer, lr_schedule, grad_accum, state, batch, rng)

  return train_step


def make_replica_step(
  method: Method,
  make_optimizer: Callable[[Any], optax.GradientTransformation],
  make_schedule: Callable[[Any], Callable[[jax.Array], jax.Array]],
  grad_accum: int = 1,
) -> Callable[[TrainState, Batch, jax.Array, Any, Any], tuple[TrainState, Metrics]]:
  """The train step of one replica under `jax.vmap` (jaxrepr/replicas.py): state, batch, key,
  hyperparameters and loss coefficients carry a leading replica axis. The optimizer and schedule
  are built inside from each replica's hyperparameters (`make_optimizer(hparams)`), and swept loss
  coefficients ({'model.eta': values}) reach `method.swept_loss` as each replica's own scalars, so
  that swept values can differ; with no coefficient swept the step calls `method.loss` (or its
  loss at this step, `loss_at_step`), as a single run does.

  Every replica is at the same step, so a step-dependent loss gets the step unbatched (replica
  0's): a `lax.cond` on it stays a branch under vmap instead of becoming a select that computes
  both branches."""

  def one(state, batch, rng, hparams, coefficients, step):
    optimizer, lr_schedule = make_optimizer(hparams), make_schedule(hparams)
    loss_fn = loss_at_step(method, step)
    if coefficients:
      if method.step_loss is not None:  # swept_loss would silently drop the step's loss
        raise ValueError("a loss that changes with the step cannot sweep coefficients as well")
      loss_fn = lambda p, b, r: method.swept_loss(p, b, r, coefficients)  # noqa: E731
    return _train_step(loss_fn, optimizer, lr_schedule, grad_accum, state, batch, rng)

  def replica_step(state: TrainState, batch: Batch, rng: jax.Array, hparams: Any, coefficients):
    vmapped = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))
    return vmapped(state, batch, rng, hparams, coefficients, state.step[0])

  return replica_step


def _train_step(loss_fn, optimizer, lr_schedule, grad_accum, state, batch, rng):
  step_rng = jax.random.fold_in(rng, state.step)
  loss, metrics, grads = _loss_and_grads(loss_fn, state.params, batch, step_rng, grad_accum)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  metrics.update(
    loss=loss,
    lr=lr_schedule(state.step),
    grad_norm=optax.tree.norm(grads),
    update_norm=optax.tree.norm(updates),
    param_norm=optax.tree.norm(params),
  )
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def param_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
