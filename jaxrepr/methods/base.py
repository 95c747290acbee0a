"""The method contract: what the trainer knows about a method, and nothing more.

A method package `jaxrepr.methods.<name>` exposes `build(config) -> Method`. The trainer jits
`loss` (under `jax.value_and_grad`) and the evaluators jit `predict`; both see global batches whose
leading axis is sharded over the `data` mesh axis, so a loss that averages over the batch gives the
same number on one device and on many.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Batch = dict[str, jax.Array]
Params = Any
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
  """Pure functions that define a method.

  Attributes:
    init: (rng, batch) -> params. `batch` is an example batch (any batch size).
    loss: (params, batch, rng) -> (scalar loss, {name: scalar metric}). Pure and jittable.
    predict: (params, batch, rng) -> outputs (any pytree). What evaluators call.
    param_count_note: optional text printed next to the parameter count at start-up.
  """

  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]
  predict: Callable[[Params, Batch, jax.Array], Any]
  param_count_note: str = ""
