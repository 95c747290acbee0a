"""Test-wide settings: strict rank promotion, 8 simulated CPU devices, fast compilation.

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
# The launchers' persistent compilation cache (config.compilation_cache_dir='auto': under
# $XDG_CACHE_HOME) goes to a directory of this test process, not the user's cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="jaxrepr_test_cache_")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
