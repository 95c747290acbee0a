"""config.precision='bfloat16': bf16 compute, float32 parameters and optimizer state, and loss
curves that follow the float32 ones (classifier on 8 simulated devices; LPN, NoProp DT and CT on
one, which compiles and runs their tiny steps several times faster)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import train
from tests.core.helpers import load_config
from tests.core.test_train import losses, small_config


def _lpn_config():
  config = load_config("lpn", "tiny")
  config.num_devices = 1
  config.train.update(dict(steps=12, log_every=1, checkpoint_every=0))
  config.evals = {}
  return config


def _noprop_config(variant):
  def make():
    config = load_config("noprop", f"{variant},tiny")
    config.num_devices = 1
    config.train.update(dict(steps=12, log_every=1, checkpoint_every=0))
    config.evals = {}
    return config

  return make


# NoProp's loss is dominated by the denoising terms of the bf16 blocks (so the curve comparison
# checks them), but with noise sampled afresh each step it does not fall within 12 steps of the tiny
# model: no falling check there.
@pytest.mark.parametrize(
  "make_config,rtol,falls",
  [
    (small_config, 0.02, True),
    pytest.param(_lpn_config, 0.03, True, marks=pytest.mark.heavy),
    (_noprop_config("dt"), 0.03, False),
    pytest.param(_noprop_config("ct"), 0.03, False, marks=pytest.mark.heavy),
  ],
)
def test_bfloat16_loss_curve_follows_float32(tmp_path, make_config, rtol, falls):
  curves = {}
  for precision in ("float32", "bfloat16"):
    config = make_config()
    config.precision = precision
    workdir = str(tmp_path / precision)
    train.train_and_evaluate(config, workdir)
    curves[precision] = losses(workdir)
    run = train.build(config)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(run.state.params))
    assert all(
      p.dtype == jnp.float32
      for p in jax.tree.leaves(run.state.opt_state)
      if hasattr(p, "dtype") and jnp.issubdtype(p.dtype, jnp.floating)
    )
    with jax.set_mesh(run.mesh):
      hlo = run.train_step.lower(run.state, run.next_batch(), run.train_rng).as_text()
    assert ("bf16" in hlo) == (precision == "bfloat16")  # the setting reaches the compute
  f32, bf16 = (np.array([c[s] for s in sorted(c)]) for c in (curves["float32"], curves["bfloat16"]))
  assert len(f32) == len(bf16) > 5
  assert not np.array_equal(f32, bf16)
  np.testing.assert_allclose(bf16, f32, rtol=rtol)
  if falls:
    assert bf16[-1] < bf16[0]


def test_precision_a_method_does_not_implement_is_refused(tmp_path):
  config = load_config("set_max", "tiny")
  config.precision = "bfloat16"
  with pytest.raises(ValueError, match=r"config.precision='bfloat16': method 'set_tasks' supports"):
    train.train_and_evaluate(config, str(tmp_path))


def test_unknown_precision_is_refused(tmp_path):
  config = small_config()
  config.precision = "float16"
  with pytest.raises(ValueError, match=r"config.precision='float16': must be one of"):
    train.train_and_evaluate(config, str(tmp_path))
