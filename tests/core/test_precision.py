"""config.precision='bfloat16': bf16 compute, float32 parameters and optimizer state, and loss curves
that follow the float32 ones (classifier and LPN, 8 simulated devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import train
from tests.core.helpers import load_config
from tests.core.test_train import losses, small_config


def _lpn_config():
  config = load_config("lpn", "tiny")
  config.train.update(dict(steps=12, log_every=1, checkpoint_every=0))
  config.evals = {}
  return config


@pytest.mark.parametrize("make_config,rtol", [(small_config, 0.02), (_lpn_config, 0.03)])
def test_bfloat16_loss_curve_follows_float32(tmp_path, make_config, rtol):
  curves = {}
  for precision in ("float32", "bfloat16"):
    config = make_config()
    config.precision = precision
    workdir = str(tmp_path / precision)
    train.train_and_evaluate(config, workdir)
    curves[precision] = losses(workdir)
    run = train.build(config)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(run.state.params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(run.state.opt_state)
               if hasattr(p, "dtype") and jnp.issubdtype(p.dtype, jnp.floating))
    with jax.set_mesh(run.mesh):
      hlo = run.train_step.lower(run.state, run.next_batch(), run.train_rng).as_text()
    assert ("bf16" in hlo) == (precision == "bfloat16")   # the setting reaches the compute
  f32, bf16 = (np.array([c[s] for s in sorted(c)]) for c in (curves["float32"], curves["bfloat16"]))
  assert len(f32) == len(bf16) > 5
  assert not np.array_equal(f32, bf16)
  np.testing.assert_allclose(bf16, f32, rtol=rtol)
  assert bf16[-1] < bf16[0]


def test_precision_a_method_does_not_implement_is_refused(tmp_path):
  config = load_config("noprop", "tiny")
  config.precision = "bfloat16"
  with pytest.raises(ValueError, match=r"config.precision='bfloat16': method 'noprop' supports"):
    train.train_and_evaluate(config, str(tmp_path))


def test_unknown_precision_is_refused(tmp_path):
  config = small_config()
  config.precision = "float16"
  with pytest.raises(ValueError, match=r"config.precision='float16': must be one of"):
    train.train_and_evaluate(config, str(tmp_path))
