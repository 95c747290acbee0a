"""Loss coefficients swept inside one program (jaxrepr/replicas.py, a method's `SWEEPABLE`): the
sweep trains one program, each replica equals the single run of its coefficient, and a field the
method does not declare still trains one program per value."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import replicas, train
from jaxrepr.errors import ConfigError
from jaxrepr.methods import noprop
from tests.core.helpers import load_config
from tests.core.test_replicas import assert_same_run


def noprop_tiny(variant="dt"):
  """configs/noprop.py:<variant>,tiny for 4 steps: losses every step, evaluations at 2 and 4."""
  config = load_config("noprop", f"{variant},tiny")
  config.train.update(dict(steps=4, log_every=1, checkpoint_every=0))
  config.evals.test.every = 2
  config.num_devices = 1
  return config


def convirt_xor():
  """ConVIRT on two of the XOR modalities (configs/contrastive_xor.py:tiny): 6 steps."""
  config = load_config("contrastive_xor", "tiny")
  config.model.update(dict(objective="convirt", modalities=("a", "b")))
  config.train.update(dict(steps=6, log_every=2, checkpoint_every=0))
  config.evals = {}  # its evaluator retrieves b from (a, c): three modalities
  config.num_devices = 1
  return config


def test_declared_loss_coefficients_are_swept_inside_one_program():
  config = noprop_tiny()
  config.seeds = (0, 1)
  config.sweep = "model.eta=0.1,1.0;optim.lr=1e-3,3e-4"
  assert replicas.programs(config) == [("", config)]
  reps = replicas.replicas(config)
  assert [r.name for r in reps][:3] == [
    "model.eta=0.1,optim.lr=0.001/s0",
    "model.eta=0.1,optim.lr=0.001/s1",
    "model.eta=0.1,optim.lr=0.0003/s0",
  ]
  assert reps[4].config.model.eta == 1.0 and config.model.eta == 0.1
  # the optimizer gets its fields, the loss its coefficients, each with one value per replica
  assert sorted(replicas.hyperparameters(reps)) == ["lr"]
  coefficients = replicas.coefficients(reps)
  assert sorted(coefficients) == ["model.eta"]
  np.testing.assert_allclose(coefficients["model.eta"], [0.1] * 4 + [1.0] * 4, rtol=1e-7)
  xor = convirt_xor()
  xor.sweep = "model.convirt_lambda=0.25,0.75;model.convirt_tau=0.1,0.5"
  assert replicas.programs(xor) == [("", xor)]
  assert len(replicas.coefficients(replicas.replicas(xor))["model.convirt_tau"]) == 4


def test_a_field_the_method_does_not_declare_still_trains_one_program_per_value():
  config = noprop_tiny()
  config.sweep = "model.dropout=0.0,0.2;model.eta=0.1,1.0"
  programs = replicas.programs(config)
  assert [sub for sub, _ in programs] == ["model.dropout=0.0", "model.dropout=0.2"]
  assert programs[1][1].model.dropout == 0.2
  assert replicas.parse_sweep(programs[1][1].sweep) == [("model.eta", (0.1, 1.0))]
  with pytest.raises(ConfigError, match="change the program"):
    replicas.replicas(config)
  # a coefficient of another method: the classifier declares none
  classifier = load_config("classifier", "mlp")
  classifier.sweep = "model.hidden=(8,),(16,)"
  assert len(replicas.programs(classifier)) == 2


@pytest.mark.parametrize(
  "sweep, message",
  [
    ("model.etaa=0.1,1.0", "config.sweep names model.etaa, but config.model.etaa does not exist"),
    ("model.eta=0.1,'big'", "config.sweep: config.model.eta='big'"),
  ],
)
def test_a_swept_coefficient_that_is_not_a_field_stops_with_one_line(sweep, message):
  config = noprop_tiny()
  config.sweep = sweep
  with pytest.raises(ConfigError, match=message) as error:
    train.build(config)
  assert "\n" not in str(error.value)


def test_a_method_that_declares_a_coefficient_without_a_swept_loss_is_refused(monkeypatch):
  build = noprop.build
  monkeypatch.setattr(noprop, "build", lambda c: dataclasses.replace(build(c), swept_loss=None))
  config = noprop_tiny()
  config.sweep = "model.eta=0.1,1.0"
  with pytest.raises(ConfigError, match=r"\['model.eta'\] .* no Method.swept_loss"):
    train.build(config)


@pytest.mark.parametrize(
  "variant", ["dt", pytest.param("ct", marks=pytest.mark.heavy)], ids=["dt", "ct"]
)
def test_noprop_swept_loss_takes_eta_as_a_value(variant):
  """What the replica step calls: `swept_loss` with {} is `loss` bit for bit, and with eta given as
  a float32 array it is the loss of the method built with that eta (DT Eq. 8, CT Eq. 9)."""
  config = noprop_tiny(variant)
  config.model.num_blocks = 1  # DT: one block compiles in half the time of two
  method = noprop.build(config)
  config.model.eta = 2.5
  own = noprop.build(config)
  rng = jax.random.key(0)
  batch = {
    "image": jax.random.uniform(rng, (16, 8, 8, 1)),
    "label": jnp.arange(16, dtype=jnp.int32) % 10,
  }
  params = jax.jit(method.init)(jax.random.key(1), batch)

  def losses(params, eta):  # one compilation for the four
    return (
      method.loss(params, batch, rng),
      method.swept_loss(params, batch, rng, {}),
      method.swept_loss(params, batch, rng, {"model.eta": eta})[0],
      own.loss(params, batch, rng)[0],
    )

  loss, same, swept, want = jax.jit(losses)(params, jnp.float32(2.5))
  jax.tree.map(np.testing.assert_array_equal, loss, same)
  np.testing.assert_allclose(swept, want, rtol=1e-6)
  assert not np.isclose(swept, loss[0], rtol=1e-3)


def _one_replica_step(config):
  """(the program's loss per replica after one step, the loss of each replica's own method)."""
  run = train.build(config)
  assert len(run.replicas) == len(jax.tree.leaves(run.state.params)[0]) >= 2
  params = jax.tree.map(np.asarray, run.state.params)  # the step donates the state
  batch = run.next_batch()
  _, metrics = run.train_step(run.state, batch, run.train_rng)
  own = []
  for r, out in enumerate(train.outputs(run, "unused")):
    mine = jax.tree.map(lambda x, r=r: x[r], params)
    rng = jax.random.fold_in(run.train_rng[r], 0)  # the step folds in the step number, 0
    value, _ = jax.jit(out.method.loss)(mine, {k: v[r] for k, v in batch.items()}, rng)
    own.append(float(value))
  return np.asarray(metrics["loss"]), np.asarray(own)


@pytest.mark.parametrize(
  "make, sweep",
  [
    (convirt_xor, "model.convirt_lambda=0.75,0.2;model.convirt_tau=0.1,0.5"),
    pytest.param(noprop_tiny, "model.eta=0.1,1.0", marks=pytest.mark.heavy),
    pytest.param(lambda: noprop_tiny("ct"), "model.eta=0.3,1.0", marks=pytest.mark.heavy),
  ],
  ids=["convirt", "noprop_dt", "noprop_ct"],
)
def test_the_replica_step_gives_each_replica_the_loss_of_its_own_coefficients(make, sweep):
  """One step of the program: replica r's loss is the loss of the method built from replica r's
  own config (its coefficients constants there) at the same params, batch and key, so the step
  passes each replica its own values rather than the program's."""
  config = make()
  config.sweep = sweep
  program, own = _one_replica_step(config)
  np.testing.assert_allclose(program, own, rtol=1e-5)
  assert len(set(np.round(own, 5))) == len(own)  # the coefficients change the loss


@pytest.mark.heavy
def test_a_swept_noprop_eta_trains_one_program_and_each_replica_equals_its_single_run(tmp_path):
  config = noprop_tiny()
  config.sweep = "model.eta=0.1,1.0"  # the program's own eta is 0.1 (Table 3, DT)
  summary = train.train_and_evaluate(config, str(tmp_path / "multi"))
  # one program: one checkpoint directory holds both replicas, one summary names both
  assert sorted(summary["replicas"]) == ["model.eta=0.1/s0", "model.eta=1.0/s0"]
  assert "checkpoints" in os.listdir(tmp_path / "multi")
  single = noprop_tiny()
  single.model.eta = 1.0  # the replica whose eta is not the program's
  train.train_and_evaluate(single, str(tmp_path / "single"))
  assert_same_run(tmp_path / "multi" / "model.eta=1.0" / "s0", tmp_path / "single")


@pytest.mark.heavy
def test_a_swept_convirt_lambda_trains_each_replica_as_its_single_run(tmp_path):
  config = convirt_xor()
  config.sweep = "model.convirt_lambda=0.75,0.2"
  summary = train.train_and_evaluate(config, str(tmp_path / "multi"))
  assert sorted(summary["replicas"]) == [
    "model.convirt_lambda=0.2/s0",
    "model.convirt_lambda=0.75/s0",
  ]
  single = convirt_xor()
  single.model.convirt_lambda = 0.2
  train.train_and_evaluate(single, str(tmp_path / "single"))
  assert_same_run(tmp_path / "multi" / "model.convirt_lambda=0.2" / "s0", tmp_path / "single")
