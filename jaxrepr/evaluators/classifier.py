"""Classification accuracy and cross-entropy of `method.predict` logits on a held-out split.

Fields: split ('test'), batch_size (global; padded last batch, masked out).
The data set is `config.data` (its module's `eval_arrays(cfg, split)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxrepr import data as data_contract, parallel, registry
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._batched import sum_over_batches


class Evaluator:
  def __init__(self, *, config, method, mesh, workdir, split: str = "test", batch_size: int = 512):
    del workdir
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    eval_arrays = data_contract.eval_arrays_fn(registry.data_module(config))
    if eval_arrays is None:
      raise ConfigError(
        f"config.data.name={config.data.name!r} has no labelled evaluation set "
        "(eval_arrays); the classifier evaluator needs one"
      )
    self._arrays = eval_arrays(config.data, split)
    self._mesh, self._batch_size = mesh, batch_size

    def sums(params, batch, rng):
      logits = method.predict(params, batch, rng).astype(jnp.float32)
      m = batch["mask"]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
      return {
        "correct": ((logits.argmax(-1) == batch["label"]) * m).sum(),
        "cross_entropy": (ce * m).sum(),
        "count": m.sum(),
      }

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    total = sum_over_batches(self._sums, params, self._arrays, self._batch_size, self._mesh, rng)
    return {
      "accuracy": total["correct"] / total["count"],
      "cross_entropy": total["cross_entropy"] / total["count"],
    }
