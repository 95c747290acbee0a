"""Test accuracy of NoProp's predictions (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1, Table 1).

`classifier.py` expects `method.predict` to return logits; NoProp's returns
{'logits': (B, m), 'label': int32 (B,)}, and FM's 'logits' are negative squared distances to the
class embeddings, not log-probabilities, so a cross-entropy of them means nothing. This evaluator
scores the predicted 'label' and, except for FM, the cross-entropy of the classifier's logits.

NoProp inference is stochastic (z_0 ~ N(0, I), and DT adds sqrt(c_t) eps per step, Eq. 3). The paper
reports mean +- SE over 3 seeds x 5 inference runs (Table 1); `inference_runs` (default 5) repeats
the whole pass with independent noise and reports the mean accuracy and its standard deviation over
runs.

Batch norm (the DT blocks and the back-prop chain, model.norm='batch'): the method keeps no running
statistics (jaxrepr/methods/noprop/inference.py), so this evaluator adds `reference_size` training
examples, drawn once with a fixed seed, to every batch it predicts (`reference_image`,
`reference_label`); the networks normalise with those rows' statistics only, and a prediction no
longer depends on which other examples share its evaluation batch. reference_size=0 falls back to
the statistics of each evaluation batch (transductive). The reference rows are predicted beside
every batch: with the defaults, DT evaluation costs about twice a pass over the test set alone.
Methods without batch norm ignore them.

Diagnostics: where the predictor returns 'diagnostics' (DT: block<t>; CT/FM: t0, t0.5, t1, see
inference.py), the first inference run also reports `accuracy_<name>`, the accuracy of each network
on its own at that block or time. The later runs use a function without them, which jit compiles
without the diagnostic passes.

Fields: split ('test' | 'train'), batch_size (global; the padded last batch is masked out),
inference_runs (>= 1), reference_size (>= 0; at most the training split's size).
The data set is `config.data` (its module's `eval_arrays(cfg, split)`; the reference rows come from
its 'train' split).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepr import parallel, registry
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._batched import sum_over_batches

REFERENCE_SEED = 0  # the same reference rows for every run and seed, as the test split is fixed


def reference_rows(train: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray] | None:
  """`size` training examples drawn without replacement with a fixed seed, as the batch keys the
  NoProp predictors read; None for size 0."""
  if size == 0:
    return None
  n = len(train["label"])
  if size > n:
    raise ConfigError(
      f"config.evals.<name>.reference_size={size} is larger than the training split ({n} examples)"
    )
  rows = np.sort(np.random.default_rng(REFERENCE_SEED).choice(n, size, replace=False))
  return {"reference_image": train["image"][rows], "reference_label": train["label"][rows]}


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    split: str = "test",
    batch_size: int = 512,
    inference_runs: int = 5,
    reference_size: int = 512,
  ):
    del workdir
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    if inference_runs < 1:
      raise ConfigError(f"config.evals.<name>.inference_runs={inference_runs!r} must be >= 1")
    if reference_size < 0:
      raise ConfigError(f"config.evals.<name>.reference_size={reference_size!r} must be >= 0")
    data = registry.data_module(config)
    self._arrays = data.eval_arrays(config.data, split)
    self._mesh, self._batch_size, self._runs = mesh, batch_size, inference_runs
    self._method = method
    # FM predicts the nearest embedding: its logits are -|z_1 - u_c|^2, not a softmax's input.
    self._with_ce = config.model.variant != "fm"
    reference = reference_rows(data.eval_arrays(config.data, "train"), reference_size)
    replicated = parallel.replicated(mesh)
    self._reference = (
      None
      if reference is None
      else {
        k: jax.make_array_from_callback(v.shape, replicated, lambda idx, v=v: v[idx])
        for k, v in reference.items()
      }
    )

    def sums(params_and_reference, batch, rng, diagnostics):
      out = self.predict(*params_and_reference, batch, rng)
      if not isinstance(out, dict) or "label" not in out:
        raise ValueError(
          "the noprop evaluator needs method.predict to return a dict with 'label' "
          f"(and 'logits'); got {type(out).__name__}"
        )
      m_B = batch["mask"]
      result = {"correct": ((out["label"] == batch["label"]) * m_B).sum(), "count": m_B.sum()}
      if self._with_ce:
        ce_B = optax.softmax_cross_entropy_with_integer_labels(
          out["logits"].astype(jnp.float32), batch["label"]
        )
        result["cross_entropy"] = (ce_B * m_B).sum()
      if diagnostics:
        for name, label_B in out.get("diagnostics", {}).items():
          result[f"correct_{name}"] = ((label_B == batch["label"]) * m_B).sum()
      return result

    jit = lambda diagnostics: jax.jit(  # noqa: E731
      lambda p, b, r: sums(p, b, r, diagnostics), out_shardings=replicated
    )
    self._sums = {True: jit(True), False: jit(False)}

  def predict(self, params, reference, batch, rng):
    """What the evaluator scores: `method.predict` on the batch with the reference rows added."""
    if reference is not None:
      batch = dict(batch, **reference)
    return self._method.predict(params, batch, rng)

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    accuracies, ces, first = [], [], {}
    for r in range(self._runs):
      total = sum_over_batches(
        self._sums[r == 0],
        (params, self._reference),
        self._arrays,
        self._batch_size,
        self._mesh,
        jax.random.fold_in(rng, r),
      )
      accuracies.append(total["correct"] / total["count"])
      if self._with_ce:
        ces.append(total["cross_entropy"] / total["count"])
      if r == 0:
        first = {
          f"accuracy_{k[len('correct_') :]}": v / total["count"]
          for k, v in total.items()
          if k.startswith("correct_")
        }
    result = {"accuracy": float(np.mean(accuracies))}
    if self._runs > 1:
      result["accuracy_std"] = float(np.std(accuracies))
    if self._with_ce:
      result["cross_entropy"] = float(np.mean(ces))
    result.update({k: float(v) for k, v in first.items()})
    return result
