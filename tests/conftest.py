"""Test-wide settings: strict rank promotion, and 8 simulated CPU devices where JAX allows it.

The device count must be set before JAX initialises its backend, so it is set here at import time.
Tests that need one device build a one-device mesh explicitly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
