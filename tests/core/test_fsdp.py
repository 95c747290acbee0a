"""Fully sharded data parallelism (`config.mesh.fsdp`): the same losses as one device, parameters
and optimizer state split over the fsdp axis, and clear errors."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxrepr import parallel, train
from tests.core.helpers import load_config
from tests.core.test_train import final_params, losses, small_config


def test_fsdp_spec_picks_the_largest_divisible_axis():
  assert parallel.fsdp_spec((64, 4096), 4, 8, 1024) == P(None, "fsdp")
  assert parallel.fsdp_spec((4096, 64), 4, 8, 1024) == P("fsdp")
  assert parallel.fsdp_spec((12, 7), 4, 8, 16) == P()  # no axis divides by 8
  assert parallel.fsdp_spec((64, 4096), 4, 8, 2**21) == P()  # below the size threshold
  assert parallel.fsdp_spec((64, 4096), 4, 1, 0) == P()  # fsdp = 1: replicated


@pytest.mark.parametrize(
  "name,arg,fsdp",
  [("classifier", "mlp", 8), pytest.param("lpn", "tiny", 4, marks=pytest.mark.heavy)],
)
def test_fsdp_gives_the_losses_of_one_device_with_a_fraction_of_the_bytes(
  tmp_path, name, arg, fsdp
):
  runs = {}
  for label, devices, shards in (("one", 1, 1), ("fsdp", 8, fsdp)):
    config = load_config(name, arg) if name == "lpn" else small_config()
    config.num_devices = devices
    config.mesh.fsdp = shards
    config.sharding.fsdp_min_bytes = 4096
    config.evals = {}
    config.train.update(dict(steps=6, log_every=1, checkpoint_every=3))
    workdir = str(tmp_path / label)
    train.train_and_evaluate(config, workdir)
    run = train.build(config)
    runs[label] = (config, workdir, run)
  one, sharded = losses(runs["one"][1]), losses(runs["fsdp"][1])
  assert sorted(one) == sorted(sharded) == list(range(1, 7))
  np.testing.assert_allclose([sharded[s] for s in one], [one[s] for s in one], rtol=2e-5)
  _, params_one = final_params(runs["one"][0], runs["one"][1])
  _, params_fsdp = final_params(runs["fsdp"][0], runs["fsdp"][1])
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_one, params_fsdp
  )
  state_one, state_fsdp = runs["one"][2].state, runs["fsdp"][2].state
  specs = [x.sharding.spec for x in jax.tree.leaves(state_fsdp.params)]
  assert any("fsdp" in spec for spec in specs)  # big leaves are split ...
  big = sum(x.nbytes for x in jax.tree.leaves(state_one.params) if x.nbytes >= 4096)
  small = sum(x.nbytes for x in jax.tree.leaves(state_one.params) if x.nbytes < 4096)
  per_device = parallel.bytes_per_device(state_fsdp.params)
  assert per_device < parallel.bytes_per_device(state_one.params)
  assert per_device <= big / fsdp + small + 64 * len(specs)  # ... into fsdp pieces
  opt_per_device = parallel.bytes_per_device(state_fsdp.opt_state)
  assert opt_per_device < parallel.bytes_per_device(state_one.opt_state) / 2


def test_fsdp_that_does_not_divide_the_devices_is_refused(tmp_path):
  config = small_config()
  config.mesh.fsdp = 3
  with pytest.raises(ValueError, match=r"config.mesh.fsdp=3 must be >= 1 and divide the 8 devices"):
    train.train_and_evaluate(config, str(tmp_path))
