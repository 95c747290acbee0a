"""Compute precision: `config.precision` names -> the dtype the models compute in.

Mixed precision keeps parameters, optimizer state, softmax, normalisation statistics and losses in
float32 whatever the compute dtype (see the models' `dtype` fields). The names live here, in the
building blocks, because every layer needs them: models pick their compute dtype with
`compute_dtype`, `jaxrepr.config.validate` checks `config.precision` against `PRECISIONS`, and a
method package lists the subset it implements in its own `PRECISIONS` (jaxrepr/methods/base.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrepr.errors import ConfigError

PRECISIONS = ("float32", "bfloat16")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str):
  """The jnp dtype of `config.precision`; an unknown name is an error naming the field."""
  if precision not in PRECISIONS:
    raise ConfigError(f"config.precision={precision!r}: must be one of {PRECISIONS}")
  return _DTYPES[precision]
