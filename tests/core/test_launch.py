"""launch/train.py as a user runs it: SIGKILL + rerun equals an uninterrupted run, SIGTERM saves
and exits cleanly, a typo in an override stops before compiling, `config.cpu_devices` splits the CPU
into replicas with the same losses."""

import os
import json
import random
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from tests.core.helpers import REPO, train_cmd
from tests.core.test_train import final_params, losses, small_config

pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO, "configs", "classifier.py") + ":mlp"
OVERRIDES = (
  "--config.train.steps=300",
  "--config.train.batch_size=64",
  "--config.train.log_every=1",
  "--config.train.checkpoint_every=7",
  "--config.evals.test.every=0",
)


def _env(devices=1, optimized=False):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if optimized:  # the programs users run (tests/conftest.py turns most XLA passes off)
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "0"
  return env


def _wait_for_step(workdir, step, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (
      os.path.exists(os.path.join(workdir, "metrics.jsonl"))
      and max(losses(workdir), default=0) >= step
    ):
      return
    if proc.poll() is not None:
      raise AssertionError(f"the run ended (rc={proc.returncode}) before step {step}")
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def _config():
  return small_config(steps=300, batch_size=64, checkpoint_every=7)


def test_sigkill_then_rerun_ends_equal_to_an_uninterrupted_run(tmp_path):
  """Bit for bit, with XLA's optimisations on (fusion and layout passes change rounding: the
  equality must hold in the programs users run, not only in the suite's unoptimised ones)."""
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  steps = ("--config.train.steps=150",)
  env = _env(optimized=True)
  subprocess.run(
    train_cmd(CONFIG, straight, *OVERRIDES, *steps), check=True, env=env, capture_output=True
  )
  proc = subprocess.Popen(
    train_cmd(CONFIG, killed, *OVERRIDES, *steps),
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  _wait_for_step(killed, random.Random().randint(20, 100), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  rerun = subprocess.run(
    train_cmd(CONFIG, killed, *OVERRIDES, *steps),
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert rerun.stdout.splitlines()[0].startswith("resuming from step ")
  config = _config()
  config.train.steps = 150
  step_a, params_a = final_params(config, straight)
  step_b, params_b = final_params(config, killed)
  assert step_a == step_b == 150
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(
    train_cmd(CONFIG, workdir, *OVERRIDES),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(workdir, 40, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  line = [l for l in out.splitlines() if l.startswith("SIGTERM")][0]
  step = int(line.split("at step ")[1].split(";")[0])
  assert 40 <= step < 300
  assert str(step) in os.listdir(os.path.join(workdir, "checkpoints"))


def test_override_typo_stops_before_compiling(tmp_path):
  res = subprocess.run(
    train_cmd(CONFIG, str(tmp_path), "--config.trian.steps=5"),
    env=_env(),
    capture_output=True,
    text=True,
  )
  assert res.returncode != 0
  assert "trian" in res.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cpu_devices_splits_the_cpu_into_replicas_with_the_same_losses(tmp_path):
  short = (
    "--config.train.steps=4",
    "--config.train.batch_size=64",
    "--config.train.log_every=1",
    "--config.evals.test.every=0",
  )
  one = subprocess.run(
    train_cmd(CONFIG, str(tmp_path / "one"), *short), env=_env(), capture_output=True, text=True
  )
  two = subprocess.run(
    train_cmd(CONFIG, str(tmp_path / "two"), *short, "--config.cpu_devices=2"),
    env=_env(),
    capture_output=True,
    text=True,
  )
  assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
  assert "1 devices" in one.stdout + one.stderr and "2 devices" in two.stdout + two.stderr
  want, got = losses(str(tmp_path / "one")), losses(str(tmp_path / "two"))
  assert sorted(got) == sorted(want) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)


def test_slurm_template_checkpoints_and_requeues_at_the_time_limit(tmp_path):
  """launch/slurm_gpu.sbatch under stand-ins for srun (runs the task) and scontrol (records)."""
  import sys

  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  # srun runs the task (dropping --kill-on-bad-exit) and records its pid; scancel --signal=TERM
  # signals that task, as SLURM signals a job's steps; scontrol records what it is asked.
  (bin_dir / "srun").write_text(f'#!/bin/bash\nshift\necho $$ > {tmp_path}/task.pid\nexec "$@"\n')
  (bin_dir / "scancel").write_text(
    f'#!/bin/bash\necho "$@" >> {tmp_path}/scancel.log\nkill -TERM $(cat {tmp_path}/task.pid)\n'
  )
  (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.log\n')
  for f in ("srun", "scancel", "scontrol"):
    os.chmod(bin_dir / f, 0o755)
  workdir = str(tmp_path / "run")
  env = dict(
    _env(),
    PATH=f"{bin_dir}:{os.environ['PATH']}",
    PYTHON=sys.executable,
    SLURM_SUBMIT_DIR=REPO,
    SLURM_JOB_ID="4242",
    SLURM_JOB_NUM_NODES="1",
  )
  proc = subprocess.Popen(
    ["bash", os.path.join(REPO, "launch", "slurm_gpu.sbatch"), CONFIG, workdir, *OVERRIDES],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(workdir, 30, proc)
  proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@600 delivers
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  step = int(
    [l for l in out.splitlines() if l.startswith("SIGTERM")][0].split("at step ")[1].split(";")[0]
  )
  assert 30 <= step < 300
  assert str(step) in os.listdir(os.path.join(workdir, "checkpoints"))
  assert open(tmp_path / "scancel.log").read().split() == ["--signal=TERM", "4242"]
  assert open(tmp_path / "scontrol.log").read().split() == ["requeue", "4242"]


def test_tpu_template_creates_copies_installs_and_launches_on_all_workers(tmp_path):
  """launch/tpu_pod.sh with a stand-in gcloud that records each call (no cloud access here)."""
  import sys

  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.log"
  # `describe` fails (no slice yet), everything else succeeds.
  (bin_dir / "gcloud").write_text(
    f"#!{sys.executable}\nimport json, sys\n"
    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    f"sys.exit(1 if 'describe' in sys.argv else 0)\n"
  )
  os.chmod(bin_dir / "gcloud", 0o755)
  env = dict(
    os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PROJECT="my-project", BUCKET="my-bucket"
  )
  subprocess.run(
    [
      "bash",
      os.path.join(REPO, "launch", "tpu_pod.sh"),
      "configs/lpn.py:arc,rope",
      "--config.train.steps=10",
    ],
    env=env,
    cwd=REPO,
    check=True,
    capture_output=True,
  )
  calls = [json.loads(line) for line in open(log).read().splitlines()]
  assert [c[:7] for c in calls] == [
    ["compute", "tpus", "tpu-vm", "--project", "my-project", "--zone", "us-central2-b"]
  ] * 5
  assert [c[7] for c in calls] == ["describe", "create", "scp", "ssh", "ssh"]
  calls = [" ".join(c) for c in calls]
  assert "--accelerator-type v4-32" in calls[1]
  assert "--worker=all" in calls[2] and "--worker=all" in calls[3]
  assert "uv venv -q --allow-existing --python 3.11 .venv" in calls[3]
  assert "pip install -q --python .venv/bin/python -e .[tpu]" in calls[3].replace("'", "")
  assert "gcsfuse --implicit-dirs --rename-dir-limit=200000 my-bucket /mnt/my-bucket" in calls[3]
  launch = calls[4]
  assert "--worker=all" in launch and "JAXREPR_DISTRIBUTED=1 nohup" in launch
  assert "--config='configs/lpn.py:arc,rope'" in launch
  assert "--workdir='/mnt/my-bucket/runs/lpn_arc_rope'" in launch
  assert "--config.train.steps=10" in launch


def test_gpu_bench_suite_configs_are_valid():
  """Every entry of `launch/bench.py --suite=gpu` builds a config that passes validation."""
  from jaxrepr import config as config_lib
  from tests.core.helpers import bench_module

  bench = bench_module()
  names = set()
  for name, file, variant, overrides in bench.GPU_SUITE:
    config = bench.suite_config(file, variant, overrides)
    config_lib.validate(config)
    assert config.train.batch_size == 128 or file == "noprop.py"
    names.add(name)
  assert {"lpn_pattern_grad0_b128_bf16", "lpn_pattern_grad1_b128_bf16"} <= names
  assert len(bench.GPU_REPLICA_SUITE) == 3  # a misspelt name would drop a row unseen
  for _name, file, variant, overrides in bench.REPLICA_SUITE:  # --suite=replicas
    config = bench.suite_config(file, variant, overrides)
    config.seeds = (0, 1, 2)
    config_lib.validate(config)


def test_bench_only_runs_the_named_suite_rows_and_refuses_an_unknown_one():
  from jaxrepr.errors import ConfigError
  from launch import _bench_suites

  suite = _bench_suites.REPLICA_SUITE
  assert _bench_suites.selected(None, suite) == suite
  rows = _bench_suites.selected(["lpn_main_grad0", "set_max"], suite)
  assert [r[0] for r in rows] == ["set_max", "lpn_main_grad0"]  # the suite's order
  with pytest.raises(ConfigError, match="lpn_main_grad2 not in the suite's rows"):
    _bench_suites.selected(["lpn_main_grad2"], suite)


def test_plot_runs_draws_the_metric_of_each_run_and_names_a_missing_one(tmp_path):
  import sys

  for name, scale in (("a", 1.0), ("b", 2.0)):
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "metrics.jsonl", "w") as f:
      for step in range(1, 6):
        f.write(json.dumps({"step": step, "train/loss": scale / step}) + "\n")
  out = tmp_path / "curves.png"
  cmd = [
    sys.executable,
    os.path.join(REPO, "launch", "plot_runs.py"),
    f"--runs={tmp_path / 'a'},{tmp_path / 'b'}",
    "--labels=float32,bfloat16",
    f"--out={out}",
  ]
  subprocess.run(cmd, check=True, capture_output=True)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  bad = subprocess.run(cmd + ["--metric=test/accuracy"], capture_output=True, text=True)
  assert bad.returncode != 0 and "has no 'test/accuracy'" in bad.stderr


def test_summarize_runs_gives_mean_and_std_over_seeds_and_names_an_unfinished_run(tmp_path):
  import statistics
  import sys

  def write_run(path, rows, steps=160):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": {"steps": steps}}))
    with open(path / "metrics.jsonl", "w") as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows))

  finals = {"dt_s0": 0.95, "dt_s1": 0.93, "dt_s2": 0.97, "backprop_s0": 0.84}
  for name, final in finals.items():
    write_run(
      tmp_path / "a" / name,
      [
        {"step": 80, "test/accuracy": 0.1, "train/loss": 2.0},
        {"step": 160, "train/loss": 1.0},  # accuracy not logged in this row
        {"step": 160, "test/accuracy": 0.2},
        {"step": 160, "test/accuracy": final},
      ],
    )  # evaluated again after a resume
  write_run(tmp_path / "a" / "ct_s0", [{"step": 5, "train/loss": 3.0}])
  write_run(tmp_path / "a" / "fm_s0", [{"step": 80, "test/accuracy": 0.5}])  # still training
  write_run(tmp_path / "b" / "dt_s0", [{"step": 160, "test/accuracy": 0.5}])
  script = os.path.join(REPO, "launch", "summarize_runs.py")
  cmd = [sys.executable, script, f"--runs={tmp_path}/a/*", "--scale=100", "--digits=3"]
  out = subprocess.run(cmd + ["--skip_incomplete"], check=True, capture_output=True, text=True)
  rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.stdout.splitlines()}
  dt = [100 * finals[f"dt_s{s}"] for s in range(3)]
  assert rows["dt"][1] == f"{statistics.mean(dt):.3f} +- {statistics.stdev(dt):.3f}"
  assert rows["dt"][2] == "3"
  assert rows["backprop"][1] == "84.000" and rows["backprop"][2] == "1"
  assert "ct" not in rows and "ct_s0" in out.stderr
  assert "fm" not in rows and "step 80 of 160" in out.stderr
  strict = subprocess.run(cmd, capture_output=True, text=True)
  assert strict.returncode != 0 and "has no 'test/accuracy'" in strict.stderr
  # Same run names under two parents are two groups, named with their parent.
  both = subprocess.run(
    [sys.executable, script, f"--runs={tmp_path}/a/dt_s*,{tmp_path}/b/*"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  assert f"| {tmp_path}/a/dt | 0.95 +- 0.02 | 3 |" in both
  assert f"| {tmp_path}/b/dt | 0.50 | 1 |" in both
  typo = subprocess.run(
    [sys.executable, script, f"--runs={tmp_path}/a/dt_s9"], capture_output=True, text=True
  )
  assert typo.returncode != 0 and "no run directory matches" in typo.stderr


def test_read_metric_skips_a_half_written_last_line_and_names_a_bad_one(tmp_path):
  from jaxrepr.metrics import read_metric

  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "m": 1.0}\n{"step": 2, "m": 2.0}\n{"st')
  assert read_metric(str(tmp_path), "m") == ([1, 2], [1.0, 2.0])
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "m": 1.0}\n{"st\n{"step": 2, "m": 2.0}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON object"):
    read_metric(str(tmp_path), "m")
