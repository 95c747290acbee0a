"""Zero-shot retrieval among all rows of a split: for every row, the `target` modality of that row
is to be found among the `target` of every row of the split, scored from the row's other modalities
(those of `config.model.modalities` but the target) with the method's zero-shot scores (Symile:
s <r_t(cand), prod_m r_m>; pairwise CLIP and ConVIRT: <sum_m r_m, r_t(cand)>;
jaxrepr/methods/contrastive/loss.py:zeroshot_scores).

Reports `top1`, `top5` (a hit when fewer than k candidates score strictly above the true one) and
`chance_top1` (1 / number of candidates). The data set is `config.data` (its module's
`eval_arrays(cfg, split)`, e.g. jaxrepr/data/image_strips.py).

Fields: target ('bottom'), split ('test'), batch_size (global; padded last batch, masked out),
max_rows (0: the whole split; else its first rows, queries and candidates alike).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr import data as data_contract, parallel, registry
from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._batched import sum_over_batches
from jaxrepr.methods.contrastive import loss as losses


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    target: str = "bottom",
    split: str = "test",
    batch_size: int = 500,
    max_rows: int = 0,
  ):
    del workdir
    modalities = tuple(config.model.modalities)
    if target not in modalities:
      raise ConfigError(f"config.evals.<name>.target={target!r} is not one of {modalities}")
    eval_arrays = data_contract.eval_arrays_fn(registry.data_module(config))
    if eval_arrays is None:
      raise ConfigError(
        f"config.data.name={config.data.name!r} has no evaluation set (eval_arrays); the "
        "contrastive_retrieval evaluator needs one"
      )
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    arrays = eval_arrays(config.data, split)
    n = len(arrays[target]) if not max_rows else min(max_rows, len(arrays[target]))
    self._arrays = {m: np.asarray(arrays[m][:n]) for m in modalities}
    self._arrays["row"] = np.arange(n, dtype=np.int32)
    self._n, self._target, self._mesh, self._batch_size = n, target, mesh, batch_size
    queries = tuple(m for m in modalities if m != target)
    objective = "symile" if config.model.objective == "symile" else "pairwise"
    self._encode = jax.jit(
      lambda p, b: method.predict(p, {target: b[target]}, None)["reps"][target]
    )

    def sums(params, batch, rng, cand_NxD):
      out = method.predict(params, {m: batch[m] for m in queries}, rng)
      scores_BxN = losses.zeroshot_scores(
        cand_NxD, [out["reps"][m] for m in queries], out["logit_scale"], objective
      )
      true_B = jnp.take_along_axis(scores_BxN, batch["row"][:, None], axis=1)
      above_B = (scores_BxN > true_B).sum(-1)
      m = batch["mask"]
      return {"top1": ((above_B < 1) * m).sum(), "top5": ((above_B < 5) * m).sum(), "n": m.sum()}

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def _candidates(self, params) -> jax.Array:
    reps = []
    batches = pipeline.eval_batches(
      {self._target: self._arrays[self._target]},
      self._batch_size,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )
    for batch in batches:
      reps.append(self._encode(params, parallel.to_global(batch, self._mesh)))
    return jnp.concatenate(reps)[: self._n]  # the padded rows are no candidates

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    cand = self._candidates(params)
    total = sum_over_batches(
      lambda p, b, r: self._sums(p, b, r, cand),
      params,
      self._arrays,
      self._batch_size,
      self._mesh,
      rng,
    )
    return {
      "top1": total["top1"] / total["n"],
      "top5": total["top5"] / total["n"],
      "chance_top1": 1.0 / self._n,
    }
