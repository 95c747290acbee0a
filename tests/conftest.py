"""Test-wide settings: strict rank promotion, 8 simulated CPU devices, fast compilation.

The device count must be set before JAX initialises its backend, so it is set here at import time.
Tests that need one device build a one-device mesh explicitly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Tests run tiny models whose cost is mostly XLA compilation; lighter optimisation compiles
# faster. Set in the environment so the launch/ subprocesses that tests start inherit it too.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
