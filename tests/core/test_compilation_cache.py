"""JAX's persistent compilation cache (`config.compilation_cache_dir`, set by the launchers through
`jaxrepr.parallel.apply_compilation_cache`): its default and off switch reach JAX's config, the
launchers set it and print it (launch/bench.py does not), and a program compiled once is read
back, not compiled again, by the later replicas of a multi-seed run, by a rerun of the same config
and by a resume; a damaged entry costs a warning and a compile (docs/running.md).

JAX's config and its cache are process-wide: the `cache` fixture restores both after each test.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jaxrepr import config as config_lib, parallel, train
from tests.core.helpers import REPO, load_config, train_cmd

_MIN_TIME = "jax_persistent_cache_min_compile_time_secs"


@pytest.fixture
def cache(tmp_path):
  """Points the cache at tmp_path/xla with every program written (the tests' programs compile in
  well under JAX's 1 s threshold); yields that directory and restores JAX's settings after."""
  saved = (
    jax.config.jax_compilation_cache_dir,
    getattr(jax.config, _MIN_TIME),
    jax.config.jax_enable_compilation_cache,
  )
  jax.config.update("jax_enable_compilation_cache", True)
  # JAX opens its cache once per process, at the first compile after a directory is set: reset
  # it so that this test's directory is the one used, and again after so the next test's is.
  jax_cache.reset_cache()
  jax.config.update(_MIN_TIME, 0.0)
  yield str(tmp_path / "xla")
  jax.config.update("jax_compilation_cache_dir", saved[0])
  jax.config.update(_MIN_TIME, saved[1])
  jax.config.update("jax_enable_compilation_cache", saved[2])
  jax_cache.reset_cache()


class _Compiles(logging.Handler):
  """(hit or miss, program name, cache key) of each compile that consulted the cache, in order,
  from the records of JAX's compiler logger (jax._src.compiler.log_persistent_cache_hit/_miss)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.seen = []

  def emit(self, record):
    kind = {"Persistent compilation cache hit": "hit", "PERSISTENT COMPILATION CACHE MISS": "miss"}
    for prefix, name in kind.items():
      if str(record.msg).startswith(prefix):
        self.seen.append((name, *record.args))

  def __enter__(self):
    self.logger = logging.getLogger("jax._src.compiler")
    self.level = self.logger.level
    self.logger.setLevel(logging.DEBUG)
    self.logger.addHandler(self)
    self.hit_events = []
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc):
    self.logger.removeHandler(self)
    self.logger.setLevel(self.level)
    jax.monitoring.unregister_event_listener(self._on_event)

  def _on_event(self, event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
      self.hit_events.append(event)

  def keys(self, kind, program=None):
    return [k for h, p, k in self.seen if h == kind and program in (None, p)]


def test_the_default_and_the_off_switch_reach_jax(cache, monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  config = config_lib.base_config()
  assert config.compilation_cache_dir == "auto"  # resolved per host: config.json names no home
  assert (
    parallel.apply_compilation_cache(config) == f"compilation cache: {tmp_path}/xdg/jaxrepr/xla"
  )
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "jaxrepr" / "xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  home = os.path.join(os.path.expanduser("~"), ".cache", "jaxrepr", "xla")
  assert parallel.apply_compilation_cache(config) == f"compilation cache: {home}"
  for off in ("", "none", "None", None):  # None: a field set to None in Python
    config.compilation_cache_dir = off
    assert parallel.apply_compilation_cache(config) == "compilation cache: off"
    assert jax.config.jax_compilation_cache_dir is None
  config.compilation_cache_dir = "~/x/../xla"  # a user's path, as a shell would not expand it
  parallel.apply_compilation_cache(config)
  assert jax.config.jax_compilation_cache_dir == os.path.join(os.path.expanduser("~"), "xla")
  jax.config.update(_MIN_TIME, 1.0)
  parallel.apply_compilation_cache(config)
  assert getattr(jax.config, _MIN_TIME) == 1.0  # JAX's threshold is kept


def _classifier_seeds():
  config = load_config("classifier", "mlp")
  config.seeds = (0, 1)
  config.num_devices = 1
  config.train.update(dict(steps=2, batch_size=64, log_every=1, checkpoint_every=1))
  config.evals.test.every = 0
  return config


def _lpn_seeds():
  config = load_config("lpn", "tiny")
  config.seeds = (0, 1)
  config.train.update(dict(steps=2, log_every=1, checkpoint_every=1))
  for name in [n for n in config.evals if n != "test"]:
    del config.evals[name]
  config.evals.test.latent_plot = False
  config.evals.test.searches = {"grad2": {"mode": "gradient_ascent", "steps": 2}}
  return config


def _cut_to_step_1(workdir, seeds):
  """The run as if stopped after its step-1 checkpoint (as tests/core/test_replicas.py does)."""
  shutil.rmtree(workdir / "checkpoints" / "2")
  for seed in seeds:
    path = workdir / f"s{seed}" / "metrics.jsonl"
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= 1]
    path.write_text("\n".join(kept) + "\n")


# The evaluators of both configs jit a function `sums`: the program each replica builds anew.
@pytest.mark.parametrize(
  "make",
  [_classifier_seeds, pytest.param(_lpn_seeds, marks=pytest.mark.heavy)],
  ids=["classifier", "lpn_loo"],
)
def test_replicas_reruns_and_resumes_read_their_programs_from_the_cache(cache, tmp_path, make):
  config = make()
  config.compilation_cache_dir = cache
  parallel.apply_compilation_cache(config)  # what the launchers call before the first compile
  with _Compiles() as first:
    train.run_experiment(config, str(tmp_path / "run"))
  misses, hits = first.keys("miss"), first.keys("hit")
  assert len(first.hit_events) == len(hits)  # the records read are all the hits JAX counts
  # No program compiled twice: every later compile of a program is read from the cache.
  assert len(set(misses)) == len(misses) and set(hits) <= set(misses)
  # The second replica's evaluator program is the first one's, read back.
  assert len(first.keys("miss", "jit_sums")) == 1 and first.keys("hit", "jit_sums")
  assert len([n for n in os.listdir(cache) if n.endswith("-cache")]) == len(misses)
  # A rerun of the config in a new workdir, and a resume of the run, compile nothing.
  with _Compiles() as rerun:
    train.run_experiment(config, str(tmp_path / "rerun"))
  assert rerun.keys("miss") == [] and rerun.keys("hit", "jit_sums")
  _cut_to_step_1(tmp_path / "run", config.seeds)
  with _Compiles() as resume:
    summary = train.run_experiment(config, str(tmp_path / "run"))
  assert summary["step"] == 2
  assert resume.keys("miss") == [] and resume.keys("hit", "jit_sums")


def test_a_damaged_entry_is_compiled_again_with_a_warning_until_the_cache_is_cleared(cache):
  parallel.apply_compilation_cache(ml_collections.ConfigDict(dict(compilation_cache_dir=cache)))
  program = lambda: jax.jit(lambda x: jnp.sin(x) @ x.T)  # noqa: E731 - a new jit each call
  x = jnp.arange(64.0).reshape(8, 8)
  want = program()(x)
  for name in os.listdir(cache):  # as a process killed while writing them leaves them
    with open(os.path.join(cache, name), "r+b") as f:
      f.truncate(16)
  with pytest.warns(UserWarning, match="Error reading persistent compilation cache entry"):
    np.testing.assert_array_equal(program()(x), want)
  shutil.rmtree(cache)
  jax_cache.reset_cache()  # a new process: JAX creates the directory again
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    np.testing.assert_array_equal(program()(x), want)
  assert os.listdir(cache)


@pytest.mark.heavy  # two launcher processes (that both set it: tests/core/test_run_safety.py)
def test_the_launchers_set_the_cache_and_print_it(tmp_path):
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  cache, workdir = str(tmp_path / "xla"), str(tmp_path / "run")
  config = os.path.join(REPO, "configs", "classifier.py") + ":mlp"
  overrides = (
    "--config.train.steps=1",
    "--config.train.batch_size=64",
    "--config.evals.test.every=0",
    f"--config.compilation_cache_dir={cache}",
  )
  res = subprocess.run(
    train_cmd(config, workdir, *overrides), env=env, capture_output=True, text=True
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"compilation cache: {cache}\n" in res.stderr
  written = set(os.listdir(cache))
  assert any(name.endswith("-cache") for name in written)
  res = subprocess.run(
    [sys.executable, os.path.join(REPO, "launch", "eval.py"), f"--config={config}"]
    + [f"--workdir={workdir}", *overrides],
    env=env,
    capture_output=True,
    text=True,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"compilation cache: {cache}\n" in res.stderr
  # the evaluator's program is the training run's final evaluation, read from the cache
  jit_sums = [n for n in written if n.startswith("jit_sums")]
  assert jit_sums and set(jit_sums) == {n for n in os.listdir(cache) if n.startswith("jit_sums")}


def test_an_unwritable_cache_directory_leaves_the_cache_off_and_says_why(cache, tmp_path):
  config = config_lib.base_config()
  (tmp_path / "file").write_text("")
  config.compilation_cache_dir = str(tmp_path / "file" / "xla")  # under a file: cannot be made
  line = parallel.apply_compilation_cache(config)
  assert line.startswith(f"compilation cache: off ({tmp_path}/file/xla: ") and "directory" in line
  assert jax.config.jax_compilation_cache_dir is None


@pytest.mark.heavy
def test_bench_compiles_without_the_cache(tmp_path):
  """launch/bench.py reports compile seconds: they must be compiles, not reads of a cache the
  user's environment points JAX at."""
  with open(os.path.join(REPO, "launch", "bench.py")) as f:
    assert "apply_compilation_cache" not in f.read()
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"))
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  cmd = [sys.executable, os.path.join(REPO, "launch", "bench.py")]
  cmd += ["--config=configs/classifier.py:mlp", "--steps=2", "--warmup=1", "--matmul_n=64"]
  cmd += [f"--out={tmp_path / 'bench'}"]
  res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-2000:]
  assert not os.path.exists(tmp_path / "xla") or os.listdir(tmp_path / "xla") == []
