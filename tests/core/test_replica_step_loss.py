"""A loss that changes with the step (Method.step_loss) under the replica step: one branch per step.

Every replica of a program is at the same step, so the replica step hands the step loss replica
0's step unbatched; a `lax.cond` on it then stays a conditional in the compiled program instead of
becoming a select that computes both branches (and their gradients) for every replica.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrepr.methods.base import Method
from jaxrepr.train_step import create_state, make_replica_step


def _method(switch: int = 2):
  def first(params, batch, rng):
    return jnp.mean((params["w"] * batch["x"]) ** 2), {}

  def final(params, batch, rng):
    return jnp.mean(jnp.abs(params["w"] * batch["x"] - 1.0)), {}

  def step_loss(params, batch, rng, step):
    loss, metrics = jax.lax.cond(step >= switch, final, first, params, batch, rng)
    return loss, dict(metrics, phase=(step >= switch).astype(jnp.float32))

  return Method(
    init=lambda rng, batch: {"w": jnp.ones((3,))},
    loss=first,
    predict=lambda params, batch, rng: params["w"] * batch["x"],
    step_loss=step_loss,
  )


def _replicated(x, r=2):
  return jax.tree.map(lambda a: jnp.stack([a] * r), x)


def _step_and_args(method):
  step = make_replica_step(method, lambda h: optax.sgd(h["lr"]), lambda h: lambda s: h["lr"])
  state = _replicated(create_state({"w": jnp.ones((3,))}, optax.sgd(0.1)))
  batch = _replicated({"x": jnp.arange(3.0)})
  rng = jnp.stack([jax.random.key(0), jax.random.key(1)])
  return step, (state, batch, rng, {"lr": jnp.asarray([0.1, 0.2])}, {})


def test_the_replica_step_keeps_the_step_loss_a_conditional():
  step, args = _step_and_args(_method())
  text = str(jax.make_jaxpr(step)(*args))
  assert "cond[" in text


def test_each_replica_takes_the_phase_of_the_shared_step():
  step, args = _step_and_args(_method(switch=1))
  state = args[0]
  phases = []
  for _ in range(3):
    state, metrics = jax.jit(step)(state, *args[1:])
    phases.append(np.asarray(metrics["phase"]).tolist())
  assert phases == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


def test_sweeping_coefficients_of_a_step_dependent_loss_is_refused():
  method = _method()
  method = Method(**{**method.__dict__, "swept_loss": lambda p, b, r, c: method.loss(p, b, r)})
  step, args = _step_and_args(method)
  coefficients = {"model.eta": jnp.asarray([0.1, 0.2])}
  with pytest.raises(ValueError, match="cannot sweep coefficients"):
    step(*args[:4], coefficients)


def test_a_fresh_sweep_refuses_a_point_trained_as_a_program_of_its_own(tmp_path):
  """A sweep point's directory with its own checkpoints (a field swept as separate programs, as
  loss coefficients were before they could be swept in one program) stops a fresh start."""
  from jaxrepr import train
  from jaxrepr.errors import WorkdirError

  run_dirs = [str(tmp_path / "model.eta=0.1" / "s0"), str(tmp_path / "model.eta=1.0" / "s0")]
  train._refuse_fresh_start(str(tmp_path), [], run_dirs)  # nothing there: a fresh start is fine
  (tmp_path / "model.eta=1.0" / "checkpoints").mkdir(parents=True)
  with pytest.raises(WorkdirError, match=r"model.eta=1.0\) holds the metrics of an earlier run"):
    train._refuse_fresh_start(str(tmp_path), [], run_dirs)
