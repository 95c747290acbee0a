"""Two processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives) reproduce the
losses of one process with 8 devices."""

import os
import socket
import subprocess

import numpy as np
import pytest

from jaxrepr import train
from tests.core.helpers import REPO, train_cmd
from tests.core.test_train import losses, small_config

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

CONFIG = os.path.join(REPO, "configs", "classifier.py") + ":mlp"
OVERRIDES = ("--config.train.steps=20", "--config.train.batch_size=64", "--config.train.log_every=1",
             "--config.train.checkpoint_every=10", "--config.evals.test.every=0")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_reproduce_one_process_with_eight_devices(tmp_path):
  single = tmp_path / "single"
  train.train_and_evaluate(small_config(), str(single))  # this process has 8 CPU devices

  multi = str(tmp_path / "multi")
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      train_cmd(CONFIG, multi, *OVERRIDES, f"--coordinator=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={i}"),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "8 devices over 2 processes" in outs[0][0]
  expected, got = losses(single), losses(multi)
  assert sorted(got) == list(range(1, 21))
  np.testing.assert_allclose([got[s] for s in range(1, 21)], [expected[s] for s in range(1, 21)],
                             rtol=2e-5)
