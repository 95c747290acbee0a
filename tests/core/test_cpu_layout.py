"""`config.cpu_devices='auto'`: the CPU device layout the launchers choose (jaxrepr/cpu_layout.py),
its exceptions, the field's validation, launch/train.py applying it, and a checkpoint written in one
layout resuming in another."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxrepr import config as config_lib, cpu_layout, train
from jaxrepr.cpu_layout import HostFacts
from jaxrepr.errors import ConfigError
from tests.core.helpers import REPO, load_config
from tests.core.test_train import final_params, losses, small_config


def _config(batch=64, evals=(), grad_accum=1, fsdp=1, cpu_devices="auto"):
  config = config_lib.base_config()
  config.train.update(dict(batch_size=batch, grad_accum=grad_accum))
  config.mesh.fsdp = fsdp
  config.cpu_devices = cpu_devices
  for i, size in enumerate(evals):
    config.evals[f"e{i}"] = dict(kind="classifier", batch_size=size)
  return config


def _count(config, cores=2, **facts):
  return cpu_layout.resolve(config, HostFacts(cores=cores, **facts)).count


def test_auto_is_the_default_and_gives_one_device_per_core():
  assert config_lib.base_config().cpu_devices == "auto"
  layout = cpu_layout.resolve(_config(batch=64), HostFacts(cores=2))
  assert layout.count == 2
  assert layout.line() == (
    "cpu devices: 2 (auto: one per core of 2 cores; every batch size divides by 2)"
  )
  assert _count(_config(batch=64), cores=8) == 8


@pytest.mark.parametrize(
  "batch,evals,grad_accum,cores,want",
  [
    (6, (), 1, 4, 3),  # the largest count <= cores that divides the batch
    (64, (10,), 1, 4, 2),  # an evaluator's batch counts too
    (64, (), 32, 4, 2),  # so does the micro-batch under gradient accumulation
    (7, (), 1, 2, 1),  # nothing above one divides
  ],
)
def test_auto_lowers_the_count_until_every_batch_divides(batch, evals, grad_accum, cores, want):
  config = _config(batch=batch, evals=evals, grad_accum=grad_accum)
  layout = cpu_layout.resolve(config, HostFacts(cores=cores))
  assert layout.count == want
  if want < cores:
    assert f"lowered to {want}" in layout.reason


def test_an_evaluator_without_a_batch_size_counts_with_its_class_default():
  """set_tasks' Evaluator has batch_size=10 by default: 'auto' must divide it where the config
  leaves it out (the constructor gets the default), and a batch_size the config sets wins."""
  config = _config(batch=64)
  config.evals["sets"] = dict(kind="set_tasks")
  lookup = config_lib.evaluator_class
  assert cpu_layout.constructor_default(lookup("sets", config.evals.sets), "batch_size") == 10
  assert cpu_layout.batch_sizes(config, lookup)["evals.sets.batch_size"] == 10
  layout = cpu_layout.resolve(config, HostFacts(cores=8), lookup)
  assert layout.count == 2 and "evals.sets.batch_size=10" in layout.reason
  config.evals.sets.batch_size = 16
  assert cpu_layout.resolve(config, HostFacts(cores=8), lookup).count == 8


def test_auto_keeps_a_multiple_of_the_fsdp_axis():
  assert _count(_config(batch=64, fsdp=2), cores=4) == 4
  assert _count(_config(batch=64, fsdp=2), cores=3) == 2
  # the mesh needs data x fsdp devices, even beyond the cores
  assert _count(_config(batch=64, fsdp=4), cores=2) == 4


def test_auto_leaves_jax_default_off_the_cpu_and_where_the_count_is_set_already():
  config = _config(batch=64)
  assert _count(config, accelerator="JAX_PLATFORMS=cuda") is None
  assert _count(config, forced_count=8) is None
  assert _count(config, multi_process=True) is None
  config.num_devices = 4
  assert _count(config) == 4


def test_an_explicit_count_wins_everywhere():
  config = _config(batch=7, cpu_devices=3)
  assert _count(config, accelerator="libtpu is installed", forced_count=8) == 3
  assert _count(config, multi_process=True, cores=1) == 3


@pytest.mark.parametrize("value", [0, -1, "two", True, 2.5, None])
def test_bad_values_are_refused_naming_the_field(value):
  with pytest.raises(ConfigError, match=r"^config.cpu_devices=.*: must be >= 1 or 'auto'"):
    cpu_layout.resolve(_config(cpu_devices=value), HostFacts(cores=2))
  config = load_config("classifier", "mlp")
  config.cpu_devices = value
  with pytest.raises(ConfigError, match=r"^config.cpu_devices="):
    config_lib.validate(config)


def test_accelerators_are_found_from_jax_platforms_and_installed_plugins():
  assert cpu_layout.accelerator({"JAX_PLATFORMS": "cpu"}, {"jax-cuda12-plugin"}) is None
  assert cpu_layout.accelerator({"JAX_PLATFORMS": "cuda,cpu"}, set()) == "JAX_PLATFORMS=cuda,cpu"
  assert cpu_layout.accelerator({}, {"jax-cuda12-plugin", "numpy"}) == (
    "jax-cuda12-plugin is installed"
  )
  assert cpu_layout.accelerator({}, {"libtpu"}) == "libtpu is installed"
  assert cpu_layout.accelerator({}, {"numpy", "jax"}) is None


def test_forced_count_reads_xla_flags():
  env = {"XLA_FLAGS": "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8"}
  assert cpu_layout.forced_count(env) == 8
  assert cpu_layout.forced_count({"XLA_FLAGS": "--xla_cpu_foo=1"}) is None
  assert cpu_layout.forced_count({}) is None


def _sysfs(root, cores_of_cpus):
  """A fake /sys/devices/system/cpu: cpu i on package 0, core cores_of_cpus[i]."""
  for cpu, core in enumerate(cores_of_cpus):
    topology = root / f"cpu{cpu}" / "topology"
    topology.mkdir(parents=True)
    (topology / "physical_package_id").write_text("0\n")
    (topology / "core_id").write_text(f"{core}\n")
  return str(root)


def test_physical_cores_counts_hyperthread_siblings_once_within_the_affinity(tmp_path):
  sysfs = _sysfs(tmp_path / "cpu", [0, 1, 0, 1])  # 4 logical CPUs on 2 cores
  no_cgroup = str(tmp_path / "none")
  assert cpu_layout.physical_cores({0, 1, 2, 3}, sysfs, no_cgroup) == 2
  assert cpu_layout.physical_cores({0, 2}, sysfs, no_cgroup) == 1  # siblings of one core
  assert cpu_layout.physical_cores({0, 1}, str(tmp_path / "missing"), no_cgroup) == 2


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path):
  sysfs = _sysfs(tmp_path / "cpu", [0, 1, 2, 3])
  cgroup = tmp_path / "cgroup"
  cgroup.mkdir()
  (cgroup / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
  assert cpu_layout.physical_cores({0, 1, 2, 3}, sysfs, str(cgroup)) == 2
  (cgroup / "cpu.max").write_text("max 100000\n")
  assert cpu_layout.physical_cores({0, 1, 2, 3}, sysfs, str(cgroup)) == 4


def _launch(script, tmp_path, *flags):
  """launch/<script> on the classifier config without the tests' XLA_FLAGS device count."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  config = os.path.join(REPO, "configs", "classifier.py") + ":mlp"
  cmd = [sys.executable, os.path.join(REPO, "launch", script), f"--config={config}", *flags]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path), env


def test_launch_train_applies_the_auto_layout_before_jax_starts_and_prints_it(tmp_path):
  """'auto' with config.num_devices=3: train.py prints the layout line (on stderr) and builds a
  mesh of 3 CPU devices, whose check refuses batch 64 before anything compiles (quick, and proof
  that the count reached JAX)."""
  res, env = _launch("train.py", tmp_path, "--config.num_devices=3", f"--workdir={tmp_path / 'w'}")
  config = load_config("classifier", "mlp")
  config.num_devices = 3
  layout = cpu_layout.resolve(config, cpu_layout.host_facts(False, env), config_lib.evaluator_class)
  assert res.returncode != 0
  assert layout.line() in res.stderr.splitlines()
  assert "does not divide by the 3 devices of the mesh" in res.stderr


@pytest.mark.heavy
def test_launch_train_runs_on_the_auto_layout_of_this_host_and_eval_uses_it_too(tmp_path):
  """A whole short run without XLA_FLAGS: as many devices as 'auto' gives on this host; eval.py
  prints the same layout line and evaluates the checkpoint."""
  overrides = ("--config.train.steps=1", "--config.train.batch_size=64", "--config.evals={}")
  workdir = f"--workdir={tmp_path / 'w'}"
  res, env = _launch("train.py", tmp_path, *overrides, workdir)
  assert res.returncode == 0, res.stderr[-2000:]
  config = load_config("classifier", "mlp")
  config.train.batch_size = 64
  config.evals = {}
  layout = cpu_layout.resolve(config, cpu_layout.host_facts(False, env), config_lib.evaluator_class)
  assert layout.line() in res.stderr.splitlines()
  assert f"{layout.count or 1} devices over 1 processes" in res.stdout
  res, _ = _launch("eval.py", tmp_path, "--config.train.batch_size=64", workdir)
  assert res.returncode == 0, res.stderr[-2000:]
  config.evals = load_config("classifier", "mlp").evals  # eval.py runs the config's evaluators
  assert (
    cpu_layout.resolve(config, cpu_layout.host_facts(False, env), config_lib.evaluator_class).line()
    in res.stderr
  )
  assert "evaluating step 1 of" in res.stdout


@pytest.mark.heavy
def test_a_checkpoint_written_with_one_device_resumes_on_two_on_the_same_trajectory(tmp_path):
  """A one-device run whose last checkpoint is lost (as if preempted after step 2) resumes from
  step 2 on two devices, another layout, and ends where the one-device run ended."""
  assert jax.device_count() >= 2
  workdir = tmp_path / "run"
  config = small_config(steps=4, checkpoint_every=2)
  config.num_devices = 1
  train.train_and_evaluate(config, str(workdir))
  straight_losses, straight_params = losses(workdir), final_params(small_config(), workdir)[1]
  shutil.rmtree(workdir / "checkpoints" / "4")
  config = small_config(steps=4, checkpoint_every=2)
  config.num_devices = 2
  assert train.train_and_evaluate(config, str(workdir))["step"] == 4
  resumed = losses(workdir)  # the later line of a step wins: steps 3 and 4 on two devices
  assert sorted(resumed) == [1, 2, 3, 4]
  np.testing.assert_allclose(
    [resumed[3], resumed[4]], [straight_losses[3], straight_losses[4]], rtol=2e-5
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
    final_params(small_config(), workdir)[1],
    straight_params,
  )


def test_bench_layouts_rows_are_medians_per_device_count_and_the_table_compares_them(monkeypatch):
  """launch/bench.py --layouts: rounds of each layout measured in turn, one row per device count
  ('auto' resolving to 1 shares the row of 1), and the docs table's speed-up is 1 device's median
  step time over n devices'."""
  from launch import _bench_layouts

  times = iter([0.30, 0.20, 0.10, 0.50, 0.10, 0.10])  # round 1: 1, auto, 2; round 2: the same
  calls = []

  def fake(args, layout, bench_flags, checkout):
    calls.append(layout)
    devices = 1 if layout in ("1", "auto1") else 2
    return dict(devices=devices, step_s=next(times), cpu_s_per_step=0.1 * devices), f"{layout}"

  monkeypatch.setattr(_bench_layouts, "measure_once", fake)
  rows = _bench_layouts.measure("cfg", [], ["1", "auto1", "2"], 2, {})
  assert calls == ["1", "auto1", "2"] * 2  # interleaved rounds
  assert sorted(rows) == ["cfg@1dev", "cfg@2dev"]
  assert rows["cfg@1dev"]["step_s_rounds"] == [0.30, 0.20, 0.50, 0.10]
  assert rows["cfg@1dev"]["step_s"] == pytest.approx(0.25)
  assert rows["cfg@2dev"]["step_s"] == pytest.approx(0.10)
  assert rows["cfg@2dev"]["layouts"] == ["2"]
  table = _bench_layouts.table_lines({**rows, "other": dict(rows["cfg@1dev"])})
  assert len(table) == 4  # header, rule, the two rows of cfg; a row without layouts is left out
  assert table[3].startswith("| cfg | 2 | 100.0 | 100.0, 100.0 | 0.200 | 2.50x |")


def test_bench_against_another_checkout_interleaves_the_two_and_maps_the_config(monkeypatch):
  """launch/bench.py --against=DIR: each measurement is followed by the same one with DIR's
  launch/bench.py and DIR's copy of the config, rows `<name>_previous@<n>dev`."""
  from launch import _bench_layouts

  times = iter([0.10, 0.30, 0.28, 0.12])  # round 1: this checkout, then DIR; round 2: DIR first
  calls = []

  def fake(args, layout, bench_flags, checkout):
    calls.append(checkout)
    return dict(devices=2, step_s=next(times), cpu_s_per_step=0.2), "line"

  monkeypatch.setattr(_bench_layouts, "measure_once", fake)
  rows = _bench_layouts.measure("cfg", [], ["auto"], 2, {}, against="/prev")
  assert calls == [_bench_layouts.CHECKOUT, "/prev", "/prev", _bench_layouts.CHECKOUT]
  assert rows["cfg@2dev"]["step_s_rounds"] == [0.10, 0.12]
  assert rows["cfg_previous@2dev"]["step_s"] == pytest.approx(0.29)
  mine = os.path.join(_bench_layouts.CHECKOUT, "configs", "noprop.py")
  mapped = _bench_layouts.checkout_args(
    [f"--config={mine}:dt,mnist5k", "--config.seed=1", "--config=/elsewhere/c.py"], "/prev"
  )
  assert mapped == [
    "--config=/prev/configs/noprop.py:dt,mnist5k",
    "--config.seed=1",
    "--config=/elsewhere/c.py",
  ]


def test_bench_against_a_directory_that_is_no_checkout_is_a_one_line_error(tmp_path):
  res = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, "launch", "bench.py"),
      "--config=configs/classifier.py:tiny",
      f"--against={tmp_path}",
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert res.returncode != 0
  assert res.stderr.strip().splitlines() == [
    f"error: --against={tmp_path}: not a checkout of this project (no launch/bench.py)"
  ]
  for args, says in (
    (["--config=configs/classifier.py:tiny", f"--against={REPO}"], "is this checkout"),
    (["--suite=replicas", f"--against={tmp_path}"], "not --suite=replicas"),
  ):
    res = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "bench.py"), *args],
      capture_output=True,
      text=True,
      cwd=REPO,
    )
    assert res.returncode != 0 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bench_measure_once_runs_the_other_checkouts_bench_with_its_config(monkeypatch):
  from launch import _bench_layouts

  commands = []

  def fake_run(cmd, **kwargs):
    commands.append(cmd)
    out = next(a.split("=", 1)[1] for a in cmd if a.startswith("--out="))
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump({"run": {"devices": 1}}, f)
    return subprocess.CompletedProcess(cmd, 0, "", "cpu devices: 1\n")

  monkeypatch.setattr(_bench_layouts.subprocess, "run", fake_run)
  mine = os.path.join(_bench_layouts.CHECKOUT, "configs", "classifier.py")
  for checkout in (_bench_layouts.CHECKOUT, "/prev"):
    result, line = _bench_layouts.measure_once([f"--config={mine}"], "1", {}, checkout)
    assert result == {"devices": 1} and line == "cpu devices: 1"
  assert commands[0][1:3] == [
    os.path.join(_bench_layouts.CHECKOUT, "launch", "bench.py"),
    f"--config={mine}",
  ]
  assert commands[1][1:3] == ["/prev/launch/bench.py", "--config=/prev/configs/classifier.py"]
