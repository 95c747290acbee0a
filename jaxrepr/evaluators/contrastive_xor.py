"""Zero-shot retrieval on the XOR modalities (jaxrepr/data/xor_modalities.py): predict the `target`
modality (b) from the others (a, c) by the argmax of the method's zero-shot scores over all
2^{d_v} binary candidates (Symile: s <r_b(cand), r_a * r_c>; pairwise CLIP and ConVIRT:
<r_a + r_c, r_b(cand)>; jaxrepr/methods/contrastive/loss.py:zeroshot_scores).

With `config.data.missing_prob` > 0 the test examples and the candidates are fully observed
(indicator 0), as in the reference code. Reports `accuracy` on `split`, beside `bayes_accuracy`
(2^{-d_v} + p_hat (1 - 2^{-d_v})) and `chance` (2^{-d_v}). The Symile reference code averages 10
bootstrap resamples of the test set; their mean is the plain accuracy reported here.

Fields: split ('test'), target ('b'), batch_size (global; padded last batch, masked out).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr import parallel
from jaxrepr.data import xor_modalities
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
    split: str = "test",
    target: str = "b",
    batch_size: int = 1000,
  ):
    del workdir
    if config.data.name != "xor_modalities":
      raise ConfigError(
        f"config.data.name={config.data.name!r}: the contrastive_xor evaluator needs "
        "'xor_modalities'"
      )
    modalities = tuple(config.model.modalities)
    if target not in modalities:
      raise ConfigError(f"config.evals.<name>.target={target!r} is not one of {modalities}")
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    self._arrays = xor_modalities.eval_arrays(config.data, split)
    self._mesh, self._batch_size = mesh, batch_size
    d_v, p_hat = config.data.d_v, config.data.p_hat
    self._reference = {
      "bayes_accuracy": xor_modalities.bayes_accuracy(d_v, p_hat),
      "chance": 2.0**-d_v,
    }
    codes_KxV = xor_modalities.binary_codes(d_v).astype(np.float32)
    if config.data.missing_prob > 0:  # observed candidates: indicator 0
      codes_KxV = xor_modalities.with_missingness(codes_KxV, np.zeros((len(codes_KxV), 1), bool))
    candidates_KxV = jnp.asarray(codes_KxV)
    queries = tuple(m for m in modalities if m != target)
    objective = "symile" if config.model.objective == "symile" else "pairwise"

    def sums(params, batch, rng):
      out = method.predict(params, {m: batch[m] for m in queries}, rng)
      cand = method.predict(params, {target: candidates_KxV}, rng)["reps"][target]
      scores_BxK = losses.zeroshot_scores(
        cand, [out["reps"][m] for m in queries], out["logit_scale"], objective
      )
      predicted_BxV = candidates_KxV[jnp.argmax(scores_BxK, axis=-1)]
      hit_B = jnp.all(predicted_BxV == batch[target], axis=-1)
      return {"correct": (hit_B * batch["mask"]).sum(), "count": batch["mask"].sum()}

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    total = sum_over_batches(self._sums, params, self._arrays, self._batch_size, self._mesh, rng)
    return {"accuracy": total["correct"] / total["count"], **self._reference}
