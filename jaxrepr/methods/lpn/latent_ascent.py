"""Gradient ascent in LPN's latent space: the one implementation that the leave-one-out training
loss (loss.py, [Grad k]) and the test-time search (search.py) both call.

Paper: Macfarlane & Bonnet, "Searching Latent Program Spaces" (arXiv 2411.08706). The latent
optimisation z' = f(p_theta, z, X) approximately solves
z' in argmax_z sum_i log p_theta(y_i | x_i, z) over a specification X = {(x_i, y_i)} (Eq. 4);
Alg. 1 runs it at test time, Alg. 2 inside training.

  - Score (`pair_scores`): log p(R) + log p(C) + mean over the valid output cells of log p(cell),
    teacher-forced with the true shapes, as the reference code computes it (the paper writes a
    plain token log-likelihood).
  - Step (`ascent_step`): one Adam step on -score (b1 = b2 = 0.9, eps_root 1e-8: the latent
    optimiser of the reference configs), each latent's gradient clipped to norm 1 on its own. The
    reference code clips over the whole latent array of a call, which couples the tasks of a device
    batch; per-latent clipping keeps every task's search its own.
  - Ascent (`gradient_ascent`): k steps from z_0; returns the k + 1 visited latents and their
    scores, so that callers pick the best (reference code) or the last iterate (Algs. 1 and 2).
  - Learning rate (`learning_rate`): constant (every config of the paper's tables), or a cosine
    decay over the k steps, lr_t = lr * (0.5 (1 + cos(pi t / k)))^0.5 for step t = 0 .. k-1, the
    reference code's `lr_schedule` with its default exponent 0.5 (its ARC submission: 200 steps
    from lr 1.0; arXiv v1 of the paper: "cosine decay from lr 1.0"). The first step is the
    constant schedule's; every later step is smaller.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxrepr.methods.lpn.model import NUM_COLOURS, cell_valid

ScoreFn = Callable[[jax.Array], jax.Array]
ValueAndGradFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]

LR_SCHEDULES = ("constant", "cosine")
COSINE_EXPONENT = 0.5  # the reference code's default `lr_schedule_exponent`


def pair_log_prob(row_logits_BxR, col_logits_BxC, grid_BxRxCx10, y_BxRxC, y_shape_Bx2):
  """log p(R) + log p(C) + mean valid-cell log p, and per-pair accuracy statistics."""
  b, r, c = y_BxRxC.shape
  lp_rows = jnp.take_along_axis(
    jax.nn.log_softmax(row_logits_BxR.astype(jnp.float32)), y_shape_Bx2[:, 0:1] - 1, axis=1
  )[:, 0]
  lp_cols = jnp.take_along_axis(
    jax.nn.log_softmax(col_logits_BxC.astype(jnp.float32)), y_shape_Bx2[:, 1:2] - 1, axis=1
  )[:, 0]
  grid_lp = jax.nn.log_softmax(grid_BxRxCx10.astype(jnp.float32).reshape(b, r * c, NUM_COLOURS))
  y_BxK = y_BxRxC.reshape(b, r * c)
  lp_cells_BxK = jnp.take_along_axis(grid_lp, y_BxK[:, :, None], axis=2)[:, :, 0]
  valid_BxK = cell_valid(y_shape_Bx2, r, c)
  n_valid = jnp.sum(valid_BxK, axis=1)
  lp_grid = jnp.sum(jnp.where(valid_BxK, lp_cells_BxK, 0.0), axis=1) / n_valid
  cell_ok = (jnp.argmax(grid_lp, axis=-1) == y_BxK) | ~valid_BxK
  shape_ok = (jnp.argmax(row_logits_BxR, -1) + 1 == y_shape_Bx2[:, 0]) & (
    jnp.argmax(col_logits_BxC, -1) + 1 == y_shape_Bx2[:, 1]
  )
  stats = {
    "cell_accuracy": (jnp.sum(cell_ok, axis=1) - (r * c - n_valid)) / n_valid,
    "exact_match": (shape_ok & jnp.all(cell_ok, axis=1)).astype(jnp.float32),
  }
  return lp_rows + lp_cols + lp_grid, stats


def pair_scores(decoder, dparams, grids, shapes, z, latent_grad_only: bool = False):
  """Teacher-forced log p of pairs (..., R, C, 2), shapes (..., 2, 2) under latents (..., Z).

  `latent_grad_only`: for gradients w.r.t. z alone (same values, a cheaper backward; see
  `Decoder.__call__`); the parameters are stop-gradient'd so no wrong gradient reaches them."""
  lead = grids.shape[:-3]
  r, c = grids.shape[-3:-1]
  g = grids.reshape((-1, r, c, 2))
  s = shapes.reshape((-1, 2, 2))
  if latent_grad_only:
    dparams = jax.lax.stop_gradient(dparams)
  logits = decoder.apply(
    dparams,
    g[..., 0],
    s[:, :, 0],
    z.reshape((g.shape[0], -1)),
    g[..., 1],
    s[:, :, 1],
    latent_grad_only,
  )
  lp, stats = pair_log_prob(*logits, g[..., 1], s[:, :, 1])
  return lp.reshape(lead), jax.tree.map(lambda v: v.reshape(lead), stats)


def learning_rate(lr: float, schedule: str, steps: int) -> float | optax.Schedule:
  """The latent learning rate of a `steps`-step ascent: `lr`, or its cosine decay over the steps."""
  if schedule not in LR_SCHEDULES:
    raise ValueError(f"unknown latent lr schedule {schedule!r}; choose from {LR_SCHEDULES}")
  if schedule == "constant" or steps == 0:
    return lr
  return optax.cosine_decay_schedule(lr, steps, exponent=COSINE_EXPONENT)


def latent_adam(lr: float | optax.Schedule) -> optax.GradientTransformation:
  """The latent optimiser of the reference configs: Adam b1 0.9, b2 0.9, eps_root 1e-8."""
  return optax.adam(lr, b1=0.9, b2=0.9, eps_root=1e-8)


def clip_per_latent(g_xZ: jax.Array, max_norm: float = 1.0) -> jax.Array:
  """Clips each latent's gradient (last axis) to `max_norm` on its own."""
  norm = jnp.sqrt(jnp.sum(jnp.square(g_xZ), axis=-1, keepdims=True) + 1e-12)
  return g_xZ * jnp.minimum(1.0, max_norm / norm)


def scores_and_grad(score_fn, z, *args):
  """(score_fn(z, *args), gradient of its sum w.r.t. z).

  The entries of score_fn's output must depend on their own latent only; the gradient of the sum
  is then each latent's own gradient, from one backward pass."""

  def total(zz):
    v = score_fn(zz, *args)
    return jnp.sum(v), v

  (_, v), grad = jax.value_and_grad(total, has_aux=True)(z)
  return v, grad


def ascent_step(
  opt: optax.GradientTransformation,
  value_and_grad_fn: ValueAndGradFn,
  stop_gradient: bool,
  z_xZ: jax.Array,
  opt_state,
):
  """One step on -score from z (..., Z): returns (next latent, next optimiser state, score(z)).

  `stop_gradient`: the move carries no derivative, z' = z + alpha * sg(g) (the paper's Grad k
  training); otherwise derivatives flow through the update into whatever the score depends on (its
  Grad k ** rows, Tables 1, 5 and 6)."""
  s, g = value_and_grad_fn(z_xZ)
  g = clip_per_latent(g)
  if stop_gradient:
    g = jax.lax.stop_gradient(g)
  upd, opt_state = opt.update(-g, opt_state, z_xZ)
  return z_xZ + upd, opt_state, s


def gradient_ascent(
  score_fn: ScoreFn,
  z0_xZ: jax.Array,
  steps: int,
  lr: float | optax.Schedule,
  *,
  stop_gradient: bool = True,
  score_last: bool = True,
  value_and_grad_fn: ValueAndGradFn | None = None,
  unroll: bool = False,
):
  """`steps` Adam steps (`ascent_step`) on -score from z0 (..., Z).

  Args:
    score_fn: (..., Z) -> (...), each entry a function of its own latent only.
    z0_xZ: start latents.
    steps: number of optimiser steps k (0 allowed).
    lr: Adam learning rate, or a schedule of the step (`learning_rate`).
    stop_gradient: see `ascent_step`.
    score_last: score the final iterate too; when False its score is -inf, which saves one
      forward pass for callers that keep the last iterate whatever its score.
    value_and_grad_fn: z -> (scores, each latent's gradient); default `scores_and_grad`.
    unroll: trace the k steps as straight-line code (one copy per step) instead of a loop; the
      numbers agree to float rounding, compile time, memory and speed differ (see loss.py).
  Returns:
    visited latents (k+1, ..., Z) = z_0 .. z_k and their scores (k+1, ...).
  """
  opt = latent_adam(lr)
  if value_and_grad_fn is None:
    value_and_grad_fn = functools.partial(scores_and_grad, score_fn)

  def body(carry, _):
    z, state = carry
    z_next, state, s = ascent_step(opt, value_and_grad_fn, stop_gradient, z, state)
    return (z_next, state), (z_next, s)

  (z_last, _), (moved_KxZ, scores_K) = jax.lax.scan(
    body, (z0_xZ, opt.init(z0_xZ)), None, length=steps, unroll=unroll
  )
  last = score_fn(z_last) if score_last else jnp.full(z_last.shape[:-1], -jnp.inf)
  return (
    jnp.concatenate([z0_xZ[None], moved_KxZ]),
    jnp.concatenate([scores_K, last[None].astype(scores_K.dtype)]),
  )
