"""Distillation students: frozen-checkpoint loading, magnitude-pruning masks, and the KD loss.

Everything a distillation stage needs besides the trainer:

* `load_frozen(workdir)` reads the latest checkpoint of a finished classifier or distillation run
  (its `config.json` says which model it is) into host numpy parameters. The method closes over
  them as constants, so a teacher is never part of the trained parameters and gets no gradient.
* `prune_masks` / `apply_masks`: layer-wise magnitude pruning of every `kernel` leaf (Dense and Conv
  weights; biases are kept). Sparse students are trained on `params * mask`; since a pruned
  student starts from `init * mask` and the masked entries get zero gradient, they stay exactly
  zero under Adam / AdamW (zero moments give a zero update, decoupled decay of 0 is 0), so a saved
  sparse checkpoint is its own mask.
* `kd_kl(target, student_logits, T, soften_student)`: per-example KL(target || q), where
  q = softmax(z / T) when `soften_student` (the two-sided softening of Hinton et al. 2015, §2) and
  softmax(z) otherwise (the student is fitted to the softened target itself; used to make a
  generation-0 student far from the base teacher in recursive runs).

Loss of a stage:
  L = kd_weight * s * mean_B KL(F_T(t) || q_T) + ce_weight * CE(z, y),  s = T^2 if t2_scaling,
where F_T is a registered softening family (jaxrepr's formalisation of the operators of Flouro &
Chadwick, "Sparse Knowledge Distillation: A Mathematical Framework for Probability-Domain
Temperature Scaling and Multi-Stage Compression", arXiv 2601.03195) and t is the teacher's
distribution, or the meta-teacher G(p_base, q_prev, alpha) of recursive distillation (Flouro &
Chadwick, "Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement",
arXiv 2601.13100; canonical operator t = alpha p + (1 - alpha) q). The T^2 factor and the hard-label
term are Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015), §2; the
Flouro & Chadwick abstracts leave open how a softening operator enters a training loss.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrepr.errors import MissingFileError

Params = Any


@dataclasses.dataclass(frozen=True)
class Frozen:
  """A finished run's model: `model_cfg` (a classifier model config), numpy `params`, `step`."""

  workdir: str
  method: str
  model_cfg: ml_collections.ConfigDict
  params: Params
  step: int


def _latest_step(checkpoint_dir: str) -> int:
  if not os.path.isdir(checkpoint_dir):
    raise MissingFileError(f"{checkpoint_dir}: no checkpoints directory (train that run first)")
  steps = [
    int(d)
    for d in os.listdir(checkpoint_dir)
    if d.isdigit() and os.path.isdir(os.path.join(checkpoint_dir, d, "state"))
  ]
  if not steps:
    raise MissingFileError(f"{checkpoint_dir}: holds no finished checkpoint")
  return max(steps)


def model_config_of(run_config: Mapping[str, Any], path: str) -> ml_collections.ConfigDict:
  """The classifier model config of a classifier run, or the student config of a distill run."""
  method = run_config.get("method")
  if method == "classifier":
    cfg = run_config["model"]
  elif method == "distill":
    cfg = run_config["model"]["student"]
  else:
    raise ValueError(f"{path}: method {method!r} is neither 'classifier' nor 'distill'")
  cfg = dict(cfg)
  for key in ("hidden", "channels"):
    if key in cfg:
      cfg[key] = tuple(cfg[key])
  return ml_collections.ConfigDict(cfg)


def load_frozen(workdir: str) -> Frozen:
  """Parameters (numpy, host) of the latest checkpoint in `workdir`, and the model config."""
  import orbax.checkpoint as ocp  # heavy; only when a checkpoint is read

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise MissingFileError(
      f"{config_path}: not found; is {workdir!r} the workdir of a finished "
      "classifier or distill run?"
    )
  with open(config_path) as f:
    run_config = json.load(f)
  model_cfg = model_config_of(run_config, config_path)
  checkpoint_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  step = _latest_step(checkpoint_dir)
  path = os.path.join(checkpoint_dir, str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # Orbax warns about a per-item metadata file it never wrote
  try:
    tree = checkpointer.metadata(path).item_metadata
    tree = getattr(tree, "tree", tree)
    # Restore as host numpy: the parameters become constants of the jitted loss, on any mesh.
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
  finally:
    absl_logger.setLevel(level)
  params = jax.tree.map(np.asarray, state["params"])
  return Frozen(workdir, run_config["method"], model_cfg, params, step)


# ------------------------------------------------------------------------------- pruning masks
def _is_kernel(path) -> bool:
  return getattr(path[-1], "key", None) == "kernel"


def prune_masks(params: Params, sparsity: float) -> Params:
  """Layer-wise magnitude pruning: in every kernel the floor(sparsity * size) smallest |w| get 0.

  Ties are broken by position (a stable sort), so the count is exact; entries already zero are
  pruned first, so a mask at a higher sparsity contains the zeros of a lower one (nested masks
  along a multi-stage path). Non-kernel leaves get an all-ones mask.
  """
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")

  def mask(path, w):
    w = np.asarray(w)
    out = np.ones(w.shape, np.float32)
    if not _is_kernel(path):
      return out
    n_pruned = int(np.floor(sparsity * w.size))
    order = np.argsort(np.abs(w).ravel(), kind="stable")
    out.ravel()[order[:n_pruned]] = 0.0
    return out

  return jax.tree_util.tree_map_with_path(mask, params)


def apply_masks(params: Params, masks: Params | None) -> Params:
  if masks is None:
    return params
  return jax.tree.map(lambda w, m: w * m, params, masks)


def kernel_sparsity(params: Params) -> float:
  """Fraction of exactly-zero entries over all kernel leaves."""
  zeros, total = 0, 0
  for path, w in jax.tree_util.tree_leaves_with_path(params):
    if _is_kernel(path):
      w = np.asarray(w)
      zeros += int(np.sum(w == 0))
      total += w.size
  return zeros / max(total, 1)


def count_nonzero(params: Params) -> int:
  return int(sum(np.count_nonzero(np.asarray(w)) for w in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------------- the KD loss
def kd_kl(
  target_BxV: jax.Array,
  student_logits_BxV: jax.Array,
  temperature: float,
  soften_student: bool = True,
) -> jax.Array:
  """Per-example KL(target || softmax(z / T)) (or softmax(z) without `soften_student`).

  Entries with target 0 contribute 0 (0 log 0 = 0), so truncated (top-k) targets are fine.
  """
  z_BxV = student_logits_BxV.astype(jnp.float32)
  if soften_student:
    z_BxV = z_BxV / temperature
  log_q_BxV = jax.nn.log_softmax(z_BxV, axis=-1)
  positive_BxV = target_BxV > 0
  log_t_BxV = jnp.log(jnp.where(positive_BxV, target_BxV, 1.0))
  return jnp.sum(jnp.where(positive_BxV, target_BxV * (log_t_BxV - log_q_BxV), 0.0), axis=-1)


def kd_loss(
  target_BxV: jax.Array,
  student_logits_BxV: jax.Array,
  labels_B: jax.Array,
  *,
  temperature: float,
  soften_student: bool,
  t2_scaling: bool,
  kd_weight: float,
  ce_weight: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The stage loss above, with its metrics (kl, cross_entropy, accuracy, target agreement)."""
  kl_B = kd_kl(target_BxV, student_logits_BxV, temperature, soften_student)
  scale = temperature**2 if (t2_scaling and soften_student) else 1.0
  z_BxV = student_logits_BxV.astype(jnp.float32)
  log_q_BxV = jax.nn.log_softmax(z_BxV, axis=-1)
  ce_B = -jnp.take_along_axis(log_q_BxV, labels_B[:, None].astype(jnp.int32), axis=-1)[:, 0]
  kl, ce = jnp.mean(kl_B), jnp.mean(ce_B)
  total = kd_weight * scale * kl + ce_weight * ce
  predicted_B = jnp.argmax(z_BxV, axis=-1)
  return total, {
    "kl": kl,
    "cross_entropy": ce,
    "accuracy": jnp.mean(predicted_B == labels_B),
    "target_agreement": jnp.mean(predicted_B == jnp.argmax(target_BxV, axis=-1)),
  }
