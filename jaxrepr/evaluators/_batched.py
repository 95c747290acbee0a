"""One pass of a jitted per-batch sums function over a finite evaluation set.

Evaluators that report means (accuracy, KL, exact match, ...) jit a function returning sums over
the real (unmasked) rows of a batch; this accumulates them over `pipeline.eval_batches`, each
process feeding its own rows, with a fresh key per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np

from jaxrepr import parallel
from jaxrepr.data import pipeline


def sum_over_batches(
  sums_fn: Callable,
  params,
  arrays: Mapping[str, np.ndarray],
  batch_size: int,
  mesh: jax.sharding.Mesh,
  rng: jax.Array,
) -> dict[str, float]:
  """{name: total over the set} of `sums_fn(params, global_batch, rng) -> {name: scalar}`."""
  total: dict[str, float] = {}
  batches = pipeline.eval_batches(
    arrays, batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()
  )
  for i, batch in enumerate(batches):
    out = parallel.fetch(
      sums_fn(params, parallel.to_global(batch, mesh), jax.random.fold_in(rng, i))
    )
    for k, v in out.items():
      total[k] = total.get(k, 0.0) + float(np.asarray(v))
  return total
