"""Test-wide settings: strict rank promotion, 8 simulated CPU devices, fast compilation, one
compilation cache for the run.

The device count must be set before JAX initialises its backend, so it is set here at import time.
Tests that need one device build a one-device mesh explicitly.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Tests run tiny models whose cost is mostly XLA compilation; lighter optimisation compiles
# faster. Set in the environment so the launch/ subprocesses that tests start inherit it too.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One persistent compilation cache for the whole test run, in a temporary directory, not the
# user's cache: the process that imports this first (pytest, or xdist's controller) creates it,
# and the xdist workers and the launch/ subprocesses that tests start inherit it through the
# environment (the launchers' config.compilation_cache_dir='auto' is under $XDG_CACHE_HOME). The
# tests' own JAX uses it as the launchers do, so that a program several tests or evaluators
# compile (the same search in two evaluators, a kill-and-rerun's second start) compiles once.
_RUN_CACHE = "JAXREPR_TEST_CACHE_HOME"
if _RUN_CACHE not in os.environ:
  os.environ[_RUN_CACHE] = tempfile.mkdtemp(prefix="jaxrepr_test_cache_")
  atexit.register(shutil.rmtree, os.environ[_RUN_CACHE], True)
os.environ["XDG_CACHE_HOME"] = os.environ[_RUN_CACHE]

import jax  # noqa: E402

from jaxrepr import parallel  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", parallel.default_compilation_cache_dir())
