"""Metrics of the Set Transformer paper's set tasks (Lee et al., ICML 2019) on fixed generated sets.

The evaluation sets come from `jaxrepr.data.sets.eval_batches`: `num_batches` global batches of
`batch_size` sets whose ids start at `sets.EVAL_ID_OFFSET`, so they are the same at every
evaluation, for every device count, and never seen in training (the reference run.py benchmark: 100
batches of 10 sets). The sets are generated on device inside `method.predict`.

Clustering (data.task='mog', paper §5.3, Table 3 / supp. Table 5):
  ll       LL0/data: log-likelihood per data point under the predicted mixture, averaged over all
           valid points of all sets (each set's per-point mean weighted by its size). The reference
           code averages per-batch means; with one size per batch (size_per='batch') the batches
           differ only in size, so the two agree to within the spread of sizes.
  ll1      LL1/data: the same after one EM step from the prediction.
  oracle   the same under the generating parameters (paper: -1.4726).
  gap      oracle - ll (>= 0 up to noise; the paper's ISAB(32)+PMA: 0.0237).
Max regression (data.task='max', paper §5.1, Table 1):
  mae      mean absolute error |prediction - max| over the sets (paper: SAB+PMA 0.2085).

Fields: num_batches (100), batch_size (global, divisible by the device count).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr import parallel
from jaxrepr.data import sets
from jaxrepr.errors import ConfigError


class Evaluator:
  def __init__(
    self, *, config, method, mesh, workdir, num_batches: int = 100, batch_size: int = 10
  ):
    del workdir
    if num_batches < 1:
      raise ConfigError(f"config.evals.<name>.num_batches={num_batches!r} must be >= 1")
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    if config.data.name != "sets":
      raise ConfigError(
        f"the set_tasks evaluator evaluates generated sets: config.data.name must be 'sets', got "
        f"{config.data.name!r}"
      )
    self._task = config.data.task
    self._mesh = mesh
    self._batches = sets.eval_batches(
      config.data,
      num_batches=num_batches,
      batch_size=batch_size,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )

    def sums(params, batch, rng):
      out = method.predict(params, batch, rng)
      if self._task == "max":
        if "abs_error" not in out:
          raise ValueError("the set_tasks evaluator (max) needs 'abs_error' from method.predict")
        return {
          "abs_error": jnp.sum(out["abs_error"]),
          "count": jnp.asarray(out["abs_error"].shape[0], jnp.float32),
        }
      n_B = out["num_points"].astype(jnp.float32)
      result = {k: jnp.sum(out[k] * n_B) for k in ("ll", "ll1", "oracle_ll")}
      result["count"] = jnp.sum(n_B)
      return result

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    total: dict[str, float] = {}
    for i, batch in enumerate(self._batches):
      out = parallel.fetch(
        self._sums(params, parallel.to_global(batch, self._mesh), jax.random.fold_in(rng, i))
      )
      for k, v in out.items():
        total[k] = total.get(k, 0.0) + float(np.asarray(v))
    if self._task == "max":
      return {"mae": total["abs_error"] / total["count"]}
    ll, ll1, oracle = (total[k] / total["count"] for k in ("ll", "ll1", "oracle_ll"))
    return {"ll": ll, "ll1": ll1, "oracle": oracle, "gap": oracle - ll}
