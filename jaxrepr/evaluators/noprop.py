"""Test accuracy of NoProp's predictions (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1, Table 1).

`classifier.py` expects `method.predict` to return logits; NoProp's returns
{'logits': (B, m), 'label': int32 (B,)}, and FM's 'logits' are negative squared distances to the
class embeddings, not log-probabilities, so a cross-entropy of them means nothing. This evaluator
scores the predicted 'label' and, for DT/CT only, the cross-entropy of the classifier's logits.

NoProp inference is stochastic (z_0 ~ N(0, I), and DT adds sqrt(c_t) eps per step, Eq. 3). The paper
reports mean +- SE over 3 seeds x 5 inference runs; `inference_runs` repeats the whole pass with
independent noise and reports the mean accuracy and, with more than one run, its standard deviation
over runs.

Fields: split ('test' | 'train'), batch_size (global; the padded last batch is masked out; with
model.norm='batch' a prediction uses its evaluation batch's statistics, see noprop/model.py),
inference_runs (>= 1).
The data set is `config.data` (its module's `eval_arrays(cfg, split)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepr import config as config_lib, parallel
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._batched import sum_over_batches


class Evaluator:
  def __init__(self, *, config, method, mesh, workdir, split: str = "test", batch_size: int = 512,
               inference_runs: int = 1):
    del workdir
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    if inference_runs < 1:
      raise ConfigError(f"config.evals.<name>.inference_runs={inference_runs!r} must be >= 1")
    data = config_lib.data_module(config)
    self._arrays = data.eval_arrays(config.data, split)
    self._mesh, self._batch_size, self._runs = mesh, batch_size, inference_runs
    # FM predicts the nearest embedding: its logits are -|z_1 - u_c|^2, not a softmax's input.
    self._with_ce = config.model.get("variant", "dt") != "fm"

    def sums(params, batch, rng):
      out = method.predict(params, batch, rng)
      if not isinstance(out, dict) or "label" not in out:
        raise ValueError("the noprop evaluator needs method.predict to return a dict with 'label' "
                         f"(and 'logits'); got {type(out).__name__}")
      m_B = batch["mask"]
      result = {"correct": ((out["label"] == batch["label"]) * m_B).sum(), "count": m_B.sum()}
      if self._with_ce:
        ce_B = optax.softmax_cross_entropy_with_integer_labels(
            out["logits"].astype(jnp.float32), batch["label"])
        result["cross_entropy"] = (ce_B * m_B).sum()
      return result

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    accuracies, ces = [], []
    for r in range(self._runs):
      total = sum_over_batches(self._sums, params, self._arrays, self._batch_size, self._mesh,
                               jax.random.fold_in(rng, r))
      accuracies.append(total["correct"] / total["count"])
      if self._with_ce:
        ces.append(total["cross_entropy"] / total["count"])
    result = {"accuracy": float(np.mean(accuracies))}
    if self._runs > 1:
      result["accuracy_std"] = float(np.std(accuracies))
    if self._with_ce:
      result["cross_entropy"] = float(np.mean(ces))
    return result
