"""Linear probe: multinomial logistic regression on frozen features of any method with an `embed`
hook (jaxrepr/methods/base.py), fitted on the training split and scored on the test split.

Features come from `method.embed(params, batch)` over the data module's labelled evaluation
arrays (`eval_arrays(cfg, split)`, e.g. jaxrepr/data/images.py), batch by batch as global arrays;
they are standardised with the training mean and standard deviation, and the probe (weights and
bias) is fitted full-batch by L-BFGS (optax.lbfgs with its zoom line search) for `steps`
iterations inside one jitted `lax.scan` on the global arrays: a convex problem, so the result does
not depend on the device count beyond float rounding. `l2` is the ridge penalty on the weights,
(l2 / 2) ||W||^2 added to the mean cross-entropy.

Reports `accuracy` and `cross_entropy` on `test_split` and `train_accuracy`.
Fields: train_split ('train'), test_split ('test'), label ('label'), batch_size (global, padded
last batch masked out), steps (200), l2 (1e-4), max_train (0: all; else the first rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepr import data as data_contract, parallel, registry
from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError


def fit_logistic(x_NxF, y_N, mask_N, num_classes: int, steps: int, l2: float):
  """(W, b) of the L2-penalised multinomial logistic regression on the masked rows, by L-BFGS."""

  def objective(wb):
    w_FxK, b_K = wb
    logits = x_NxF @ w_FxK + b_K[None, :]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_N)
    return (ce * mask_N).sum() / mask_N.sum() + 0.5 * l2 * jnp.sum(w_FxK * w_FxK)

  wb = (jnp.zeros((x_NxF.shape[1], num_classes), jnp.float32), jnp.zeros((num_classes,)))
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry, _):
    wb, state = carry
    value, grad = value_and_grad(wb, state=state)
    updates, state = opt.update(grad, state, wb, value=value, grad=grad, value_fn=objective)
    return (optax.apply_updates(wb, updates), state), value

  (wb, _), _ = jax.lax.scan(step, (wb, opt.init(wb)), None, length=steps)
  return wb


def _scores(wb, x_NxF, y_N, mask_N):
  logits = x_NxF @ wb[0] + wb[1][None, :]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_N)
  n = mask_N.sum()
  return {
    "accuracy": ((logits.argmax(-1) == y_N) * mask_N).sum() / n,
    "cross_entropy": (ce * mask_N).sum() / n,
  }


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    train_split: str = "train",
    test_split: str = "test",
    label: str = "label",
    batch_size: int = 512,
    steps: int = 200,
    l2: float = 1e-4,
    max_train: int = 0,
  ):
    del workdir
    if method.embed is None:
      raise ConfigError(
        f"config.method={config.method!r} has no embed hook (jaxrepr/methods/base.py); the "
        "linear_probe evaluator needs one"
      )
    eval_arrays = data_contract.eval_arrays_fn(registry.data_module(config))
    if eval_arrays is None:
      raise ConfigError(
        f"config.data.name={config.data.name!r} has no labelled evaluation set (eval_arrays); "
        "the linear_probe evaluator needs one"
      )
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    if steps < 1 or l2 < 0:
      raise ConfigError(f"config.evals.<name>: steps={steps} must be >= 1 and l2={l2} >= 0")
    self._arrays = {}
    for split in (train_split, test_split):
      arrays = dict(eval_arrays(config.data, split))
      if label not in arrays:
        raise ConfigError(f"config.evals.<name>.label={label!r} is not a field of {split!r}")
      if split == train_split and max_train:
        arrays = {k: v[:max_train] for k, v in arrays.items()}
      self._arrays[split] = arrays
    self._splits = (train_split, test_split)
    self._label, self._mesh, self._batch_size = label, mesh, batch_size
    self._classes = int(max(np.max(a[label]) for a in self._arrays.values())) + 1
    self._embed = jax.jit(method.embed)

    def fit_and_score(xs, ys, masks):
      (x_tr, x_te), (y_tr, y_te), (m_tr, m_te) = xs, ys, masks
      n = m_tr.sum()
      mean = (x_tr * m_tr[:, None]).sum(0, keepdims=True) / n
      std = jnp.sqrt(((x_tr - mean) ** 2 * m_tr[:, None]).sum(0, keepdims=True) / n) + 1e-6
      x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
      wb = fit_logistic(x_tr, y_tr, m_tr, self._classes, steps, l2)
      train, test = _scores(wb, x_tr, y_tr, m_tr), _scores(wb, x_te, y_te, m_te)
      return {**test, "train_accuracy": train["accuracy"]}

    self._fit = jax.jit(fit_and_score, out_shardings=parallel.replicated(mesh))

  def _features(self, params, arrays):
    feats, labels, masks = [], [], []
    batches = pipeline.eval_batches(
      arrays, self._batch_size, shard_index=jax.process_index(), shard_count=jax.process_count()
    )
    for batch in batches:
      g = parallel.to_global(batch, self._mesh)
      feats.append(self._embed(params, g).astype(jnp.float32))
      labels.append(g[self._label].astype(jnp.int32))
      masks.append(g["mask"])
    return jnp.concatenate(feats), jnp.concatenate(labels), jnp.concatenate(masks)

  def run(self, params, rng, step) -> dict[str, float]:
    del rng, step
    xs, ys, masks = zip(*(self._features(params, self._arrays[s]) for s in self._splits))
    out = parallel.fetch(self._fit(xs, ys, masks))
    return {k: float(v) for k, v in out.items()}
