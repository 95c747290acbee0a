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
OVERRIDES = (
  "--config.train.steps=20",
  "--config.train.batch_size=64",
  "--config.train.log_every=1",
  "--config.train.checkpoint_every=10",
  "--config.evals.test.every=0",
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("fsdp", [pytest.param(1, marks=pytest.mark.heavy), 8])
def test_two_processes_reproduce_one_process_with_eight_devices(tmp_path, fsdp):
  """fsdp=8: parameters and optimizer state sharded across both processes' devices."""
  single = tmp_path / "single"
  config = small_config()
  config.mesh.fsdp, config.sharding.fsdp_min_bytes = fsdp, 4096
  train.train_and_evaluate(config, str(single))  # this process has 8 CPU devices

  multi = str(tmp_path / "multi")
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  sharding = (f"--config.mesh.fsdp={fsdp}", "--config.sharding.fsdp_min_bytes=4096")
  procs = [
    subprocess.Popen(
      train_cmd(
        CONFIG,
        multi,
        *OVERRIDES,
        *sharding,
        f"--coordinator=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "8 devices over 2 processes" in outs[0][0]
  expected, got = losses(single), losses(multi)
  assert sorted(got) == list(range(1, 21))
  np.testing.assert_allclose(
    [got[s] for s in range(1, 21)], [expected[s] for s in range(1, 21)], rtol=2e-5
  )


def _kill_one_then_restart_both(tmp_path, config_path, config, overrides, kill_after, saved):
  """Runs `config` straight in this process (8 devices), then as 2 processes x 4 devices: SIGKILL
  one once step `kill_after` is logged, tear the other down, restart both with the same command;
  the run resumes from its last checkpoint (one of `saved`) and ends with the straight run's losses.
  Process 0's lock, left by the kill, is taken over as stale."""
  import signal
  import time

  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)
  multi = str(tmp_path / "multi")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")

  def start():
    port = _free_port()
    return [
      subprocess.Popen(
        train_cmd(
          config_path,
          multi,
          *overrides,
          f"--coordinator=127.0.0.1:{port}",
          "--num_processes=2",
          f"--process_id={i}",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
      for i in range(2)
    ]

  procs = start()
  deadline = time.time() + 300
  while (
    max(losses(multi), default=0) < kill_after
    if os.path.exists(os.path.join(multi, "metrics.jsonl"))
    else True
  ):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "no progress"
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)  # one host dies ...
  procs[1].wait()
  procs[0].send_signal(signal.SIGKILL)  # ... and the job is torn down
  procs[0].wait()
  procs = start()  # both restart with the same command
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  starts = [l for l in outs[0][0].splitlines() if l.startswith(("resuming from", "starting fresh"))]
  assert starts and starts[0].startswith("resuming from step "), outs[0][0][:500]
  resumed_at = int(starts[0].split("resuming from step ")[1].split()[0])
  assert resumed_at in saved
  total = config.train.steps
  expected, got = losses(straight), losses(multi)
  assert max(got) == total
  steps = range(resumed_at + 1, total + 1)
  np.testing.assert_allclose([got[s] for s in steps], [expected[s] for s in steps], rtol=2e-5)


def test_killed_process_then_restart_of_both_resumes_from_the_checkpoint_small(tmp_path):
  """The check below on the classifier MLP, sized for CI."""
  config = small_config(steps=40, checkpoint_every=10)
  overrides = (
    "--config.train.steps=40",
    "--config.train.batch_size=64",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=10",
    "--config.evals.test.every=0",
  )
  _kill_one_then_restart_both(
    tmp_path, CONFIG, config, overrides, kill_after=15, saved=(10, 20, 30)
  )


@pytest.mark.heavy  # about 4 minutes on a 2-core CPU; the classifier version above runs in CI
def test_killed_process_then_restart_of_both_resumes_from_the_checkpoint(tmp_path):
  """LPN pattern config on 2 processes x 4 devices: SIGKILL one mid-run, restart both, and the run
  resumes from its last checkpoint and ends with the losses of an uninterrupted run."""
  from tests.core.helpers import load_config

  config_path = os.path.join(REPO, "configs", "lpn.py") + ":pattern,tiny"
  overrides = (
    "--config.train.steps=12",
    "--config.train.checkpoint_every=4",
    "--config.train.log_every=1",
    "--config.evals.test.num_tasks=8",
  )
  config = load_config("lpn", "pattern,tiny")
  config.train.update(dict(steps=12, checkpoint_every=4, log_every=1))
  config.evals.test.num_tasks = 8
  _kill_one_then_restart_both(tmp_path, config_path, config, overrides, kill_after=6, saved=(4, 8))
