"""LPN leave-one-out training loss.

Paper: Macfarlane & Bonnet, "Searching Latent Program Spaces" (arXiv 2411.08706), Eq. 8, Alg. 2.
For a task of N pairs: encode every pair once, z_j = mu_j + sigma_j eps_j; for each i the context
c_i uses only the other N-1 latents (Eq. 8), starting at z'_{i,0} = mean_{j != i} z_j (a fixed
(1 - I)/(N-1) mixing matrix, so z_i enters c_i with an exact zero weight):
  - 'mean' [Grad 0]: c_i = z'_{i,0};
  - 'gradient_ascent' [Grad k]: k steps of `latent_ascent.gradient_ascent` (the ascent the test-time
    search runs too) on -score_{-i} from z'_{i,0}. `select='best'` returns the best of the k+1
    visited latents by score_{-i} (reference code); `select='last'` the last iterate (Alg. 2).
    `stop_gradient=True`: c_i = z'_{i,0} + sg(move); False: second-order terms flow [Grad k **];
  - 'random_search' [Sample S]: the best of z'_{i,0} and z'_{i,0} + scale * eps_s, s = 1..S
    (reference code; the paper's Sample S draws from the encoder, see search.encoder_sampling).
Loss = mean over tasks and pairs of [-log p(y_i | x_i, c_i) + beta KL(q(z | x_i, y_i) || N(0, I))]
(Alg. 2), -log p = CE(rows) + CE(cols) + mean CE over the valid output cells (reference code),
teacher-forced.

Without an encoder (`train_latent.start='prior'`, the reference code's `remove_encoder_latents`
ablation, its *_ne configs): every pair's sampled latent z_j is replaced by an N(0, I) draw before
the leave-one-out mean, so the contexts carry no information from the encoder; the KL term is kept
(the reference code still adds it), so the encoder's only gradient is beta times the KL's.

Training phases (`make_step_loss`): the paper trains its ARC model with Grad 0 for 95k steps and
then Grad 1 for the last 5k (Appendix E, Table 16; Table 10 compares it with Grad 0 throughout).
`train_latent.final_phase_fraction` > 0 switches the training latent to `train_latent` updated with
`train_latent.final_phase` for that last share of the run's steps, inside the one compiled step,
chosen by the train state's step counter (so a resumed run switches at the same step, as long as
it keeps `train.steps`: the switch step is train.steps minus the final share, so a run extended to
more steps switches later, back to the first phase until then). Under a flops, steps_of or seconds
budget (jaxrepr/budget.py) every step is costed as the dearer phase (FLOPs) or as the first
(seconds).

Pair mask: a batch may carry 'pair_mask' bool (B, N), False for the empty rows of a task with fewer
than N pairs (ARC tasks of 3 pairs; data/grids.py `pad_task`). A masked pair is in no context (its
weight in z'_{i,0} and its term in every score_{-i} are exact zeros) and adds no loss, KL or metric
term: the loss is the mean over real pairs. Without the key every pair is real and the arithmetic is
the unmasked one.
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr.errors import ConfigError
from jaxrepr.methods.lpn.latent_ascent import gradient_ascent, pair_scores, scores_and_grad

# The training ascent runs as a loop when its moves are stop-gradient'd and unrolled when the loss
# differentiates through them [Grad k **]: each is the cheaper form there. Measured on the pattern
# model (Table 13), 8 tasks, 2-core CPU, jitted gradient of the loss: Grad 5 as a loop compiles in
# 16 s (unrolled: 19 s), needs 163 MiB of temporaries (236 MiB) and 1.6 s a step (1.7 s); Grad 2 **
# unrolled compiles in 19 s (loop: 22 s), needs 2.7 GiB (3.8 GiB: the loop's backward pass stacks
# every step's residuals) and 2.9 s a step (3.5 s).


def others_index(n: int) -> np.ndarray:
  """(N, N-1): for each i, the indices j != i in increasing order."""
  return np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32)


def _loo_spec_score(
  decoder,
  dparams,
  grids,
  shapes,
  per_position: bool = False,
  latent_grad_only: bool = False,
  pair_mask=None,
):
  """score_{-i}(z_i) for all i: (B, N, Z) -> (B, N), summed over the other (real) pairs.

  Returns (score, value_and_grad): `value_and_grad(z)` gives the scores and each latent's own
  gradient. All B x N x (N-1) decodes run at once, or with `per_position` one LOO position i at a
  time (`_map_positions`; each latent's score involves only its own position, so this is the
  same arithmetic with about 1/N of the activation memory). `latent_grad_only`: see `pair_scores`.
  """
  n = grids.shape[1]
  idx = others_index(n)
  spec_g, spec_s = grids[:, idx], shapes[:, idx]  # (B, N, N-1, ...)
  mask = _full_mask(grids, pair_mask)

  def score(z_BxNxZ):
    if per_position:
      return _map_positions(
        functools.partial(_position_score, decoder, dparams, latent_grad_only=latent_grad_only),
        z_BxNxZ,
        grids,
        shapes,
        mask,
      )
    z_rep = jnp.broadcast_to(z_BxNxZ[:, :, None, :], spec_g.shape[:3] + z_BxNxZ.shape[-1:])
    lp = pair_scores(decoder, dparams, spec_g, spec_s, z_rep, latent_grad_only)[0]
    return jnp.sum(jnp.where(mask[:, idx], lp, 0.0), axis=2)

  return score, functools.partial(scores_and_grad, score)


def _full_mask(grids, pair_mask):
  """The batch's pair mask (B, N) bool, all True when the batch has none. Selecting with an
  all-True mask (`jnp.where`) leaves every score bit for bit as it was."""
  if pair_mask is None:
    return jnp.ones(grids.shape[:2], bool)
  return pair_mask.astype(bool)


def _map_positions(fn, z_BxNxZ, grids, shapes, mask_BxN, out_axis: int = 1):
  """fn(z_i (B, Z), the other pairs' grids (B, N-1, ...), their shapes, their mask (B, N-1)) for
  each LOO position i, one position at a time (lax.map); each output's position axis moves to
  `out_axis`."""
  idx = others_index(grids.shape[1])
  out = jax.lax.map(
    lambda args: fn(*args),
    (
      jnp.swapaxes(z_BxNxZ, 0, 1),
      jnp.swapaxes(grids[:, idx], 0, 1),
      jnp.swapaxes(shapes[:, idx], 0, 1),
      jnp.swapaxes(mask_BxN[:, idx], 0, 1),
    ),
  )
  return jax.tree.map(lambda x: jnp.moveaxis(x, 0, out_axis), out)


def _position_score(decoder, dparams, z_BxZ, g_BxMx, s_BxMx, m_BxM, latent_grad_only: bool = False):
  """Summed log p of one LOO position's M = N-1 other pairs (B, M, ...) under its latents (B, Z),
  masked pairs (m_BxM False) excluded."""
  z_rep = jnp.broadcast_to(z_BxZ[:, None, :], g_BxMx.shape[:2] + z_BxZ.shape[-1:])
  lp = pair_scores(decoder, dparams, g_BxMx, s_BxMx, z_rep, latent_grad_only)[0]
  return jnp.sum(jnp.where(m_BxM, lp, 0.0), axis=1)


def _ascent_by_position(
  decoder, dparams, grids, shapes, mask_BxN, z0_BxNxZ, steps: int, lr: float, score_last: bool
):
  """`gradient_ascent` (stop-gradient moves, latent-only gradients) from every LOO start, one
  position at a time with its whole ascent inside: the same numbers as all positions at once (Adam
  and the clipping act per latent) with 1/N of the activations.

  Returns visited (K+1, B, N, Z), scores (K+1, B, N)."""
  score_at = functools.partial(_position_score, decoder, dparams, latent_grad_only=True)

  def one_position(z_BxZ, g, s, m):
    return gradient_ascent(
      lambda z: score_at(z, g, s, m),
      z_BxZ,
      steps,
      lr,
      stop_gradient=True,
      score_last=score_last,
      unroll=False,
    )

  return _map_positions(one_position, z0_BxNxZ, grids, shapes, mask_BxN, out_axis=2)


def select_best(visited_KxNxZ, scores_KxN):
  """The visited latent with the highest score, per entry (argmax carries no gradient)."""
  best = jnp.argmax(jax.lax.stop_gradient(scores_KxN), axis=0)
  onehot = jax.nn.one_hot(best, scores_KxN.shape[0], axis=0, dtype=visited_KxNxZ.dtype)
  return jnp.sum(onehot[..., None] * visited_KxNxZ, axis=0)


def loo_contexts(decoder, dparams, grids, shapes, z0_BxNxZ, rng, lat_cfg, pair_mask=None):
  """c_i for every pair from its LOO start z'_{i,0} (B, N, Z) and the other real pairs only."""
  mode = lat_cfg.mode
  if mode == "mean":
    return z0_BxNxZ
  if mode == "gradient_ascent":
    if lat_cfg.stop_gradient:
      dparams_sg = jax.lax.stop_gradient(dparams)
      z0_sg = jax.lax.stop_gradient(z0_BxNxZ)
      if lat_cfg.get("per_position", True):
        visited, scores = _ascent_by_position(
          decoder,
          dparams_sg,
          grids,
          shapes,
          _full_mask(grids, pair_mask),
          z0_sg,
          lat_cfg.steps,
          lat_cfg.lr,
          lat_cfg.select == "best",
        )
      else:
        score, value_and_grad = _loo_spec_score(
          decoder, dparams_sg, grids, shapes, latent_grad_only=True, pair_mask=pair_mask
        )
        visited, scores = gradient_ascent(
          score,
          z0_sg,
          lat_cfg.steps,
          lat_cfg.lr,
          stop_gradient=True,
          score_last=lat_cfg.select == "best",
          value_and_grad_fn=value_and_grad,
          unroll=False,
        )
      chosen = select_best(visited, scores) if lat_cfg.select == "best" else visited[-1]
      return z0_BxNxZ + jax.lax.stop_gradient(chosen - z0_sg)
    score, _ = _loo_spec_score(decoder, dparams, grids, shapes, pair_mask=pair_mask)
    visited, scores = gradient_ascent(
      score,
      z0_BxNxZ,
      lat_cfg.steps,
      lat_cfg.lr,
      stop_gradient=False,
      score_last=lat_cfg.select == "best",
      unroll=True,
    )
    return select_best(visited, scores) if lat_cfg.select == "best" else visited[-1]
  if mode == "random_search":
    score, _ = _loo_spec_score(
      decoder,
      jax.lax.stop_gradient(dparams),
      grids,
      shapes,
      lat_cfg.get("per_position", True),
      pair_mask=pair_mask,
    )
    z0_sg = jax.lax.stop_gradient(z0_BxNxZ)
    eps_SxBxNxZ = jax.random.normal(rng, (lat_cfg.num_samples,) + z0_sg.shape)
    offsets = jnp.concatenate([jnp.zeros_like(eps_SxBxNxZ[:1]), lat_cfg.scale * eps_SxBxNxZ])
    scores = jax.lax.map(lambda off: score(z0_sg + off), offsets)  # one candidate at a time
    return z0_BxNxZ + select_best(offsets, scores)
  raise ConfigError(
    f"config.model.train_latent.mode must be 'mean', 'gradient_ascent' or "
    f"'random_search', got {mode!r}"
  )


def check_batch(batch, model_cfg) -> None:
  """Clear errors for batches the model cannot read (runs at trace time)."""
  g, s = batch.get("grids"), batch.get("shapes")
  if g is None or s is None:
    raise ValueError(f"an LPN batch needs 'grids' and 'shapes', got keys {sorted(batch)}")
  want = (model_cfg.max_rows, model_cfg.max_cols, 2)
  if g.ndim != 5 or tuple(g.shape[2:]) != want:
    raise ValueError(f"batch['grids'] must be (B, N, {want[0]}, {want[1]}, 2), got {g.shape}")
  if tuple(s.shape) != tuple(g.shape[:2]) + (2, 2):
    raise ValueError(
      f"batch['shapes'] must be (B, N, 2, 2) = {g.shape[:2] + (2, 2)}, got {s.shape}"
    )
  if g.shape[1] < 2:
    raise ValueError(f"leave-one-out training needs N >= 2 pairs per task, got N = {g.shape[1]}")
  if not (jnp.issubdtype(g.dtype, jnp.integer) and jnp.issubdtype(s.dtype, jnp.integer)):
    raise ValueError(f"grids and shapes must be integer arrays, got {g.dtype} and {s.dtype}")
  m = batch.get("pair_mask")
  if m is not None and (tuple(m.shape) != tuple(g.shape[:2]) or m.dtype != jnp.bool_):
    raise ValueError(
      f"batch['pair_mask'] must be bool (B, N) = {g.shape[:2]}, got {m.dtype} {m.shape}"
    )


def loo_mixing(n: int, pair_mask=None):
  """Weights of the LOO start z'_{i,0} = sum_j w_ij z_j: (N, N) = (1 - I) / (N - 1) without a
  mask; with one, (B, N, N) spread evenly over the other real pairs (a masked pair's weight is an
  exact 0; a real pair with no other real pair gets the prior mean, z' = 0)."""
  off_NxN = 1.0 - np.eye(n)
  if pair_mask is None:
    return jnp.asarray(off_NxN / (n - 1), jnp.float32)
  w_BxNxN = jnp.asarray(off_NxN, jnp.float32)[None] * pair_mask.astype(jnp.float32)[:, None, :]
  return w_BxNxN / jnp.maximum(jnp.sum(w_BxNxN, axis=-1, keepdims=True), 1.0)


def loo_terms(
  encoder,
  decoder,
  params,
  grids,
  shapes,
  rng,
  model_cfg,
  enc_grids=None,
  enc_shapes=None,
  pair_mask=None,
):
  """Per-pair terms (B, N): nll, kl and accuracy statistics, plus contexts (B, N, Z).

  `enc_grids`/`enc_shapes` (default: the same pairs) are what the encoder reads; tests use them to
  change only the encoder input of one pair. `pair_mask` (B, N) bool: see the module docstring
  (the terms of masked pairs are returned but mean nothing).
  """
  b, n = grids.shape[:2]
  r, c = grids.shape[2:4]
  enc_grids = grids if enc_grids is None else enc_grids
  enc_shapes = shapes if enc_shapes is None else enc_shapes
  mu, logvar = encoder.apply(
    params["encoder"], enc_grids.reshape(b * n, r, c, 2), enc_shapes.reshape(b * n, 2, 2)
  )
  mu_BxNxZ, logvar_BxNxZ = mu.reshape(b, n, -1), logvar.reshape(b, n, -1)
  rng_eps, rng_search = jax.random.split(rng)
  eps = jax.random.normal(rng_eps, mu_BxNxZ.shape)
  z_BxNxZ = mu_BxNxZ + jnp.exp(0.5 * logvar_BxNxZ) * eps
  if model_cfg.train_latent.get("start", "encoder") == "prior":  # no encoder: see module docstring
    z_BxNxZ = jax.random.normal(jax.random.fold_in(rng_eps, 1), mu_BxNxZ.shape)
  if pair_mask is None:
    z0_BxNxZ = jnp.einsum("ij,bjz->biz", loo_mixing(n), z_BxNxZ)
  else:
    z0_BxNxZ = jnp.einsum("bij,bjz->biz", loo_mixing(n, pair_mask), z_BxNxZ)
  ctx_BxNxZ = loo_contexts(
    decoder,
    params["decoder"],
    grids,
    shapes,
    z0_BxNxZ,
    rng_search,
    model_cfg.train_latent,
    pair_mask,
  )
  lp_BxN, stats = pair_scores(decoder, params["decoder"], grids, shapes, ctx_BxNxZ)
  kl_BxN = 0.5 * jnp.sum(jnp.square(mu_BxNxZ) + jnp.exp(logvar_BxNxZ) - 1.0 - logvar_BxNxZ, -1)
  return {"nll": -lp_BxN, "kl": kl_BxN, "context": ctx_BxNxZ, **stats}


def make_loss(encoder, decoder, model_cfg):
  """(params, batch, rng) -> (loss, metrics); every term is a mean over the real pairs of all
  tasks (a plain mean over tasks and pairs when the batch has no 'pair_mask')."""

  def loss_fn(params, batch, rng):
    check_batch(batch, model_cfg)
    pair_mask = batch.get("pair_mask")
    t = loo_terms(
      encoder,
      decoder,
      params,
      batch["grids"],
      batch["shapes"],
      rng,
      model_cfg,
      pair_mask=pair_mask,
    )
    if pair_mask is None:
      mean = jnp.mean
    else:
      real = jnp.maximum(jnp.sum(pair_mask.astype(jnp.float32)), 1.0)
      mean = lambda x: jnp.sum(jnp.where(pair_mask, x, 0.0)) / real  # noqa: E731
    nll, kl = mean(t["nll"]), mean(t["kl"])
    loss = nll + model_cfg.kl_coeff * kl
    return loss, {
      "loss": loss,
      "nll": nll,
      "kl": kl,
      "cell_accuracy": mean(t["cell_accuracy"]),
      "exact_match": mean(t["exact_match"]),
    }

  return loss_fn


# The fields of `train_latent` that say when and how the latent changes; the others describe it.
PHASE_FIELDS = ("final_phase", "final_phase_fraction")


def final_phase_config(model_cfg):
  """`model_cfg` with `train_latent` updated by `train_latent.final_phase`: the model config of the
  final training phase."""
  final = copy.deepcopy(model_cfg)
  final.train_latent.update(model_cfg.train_latent.final_phase.to_dict())
  return final


def make_step_loss(encoder, decoder, model_cfg, switch_step: int):
  """(params, batch, rng, step) -> (loss, metrics): `make_loss`'s loss with `model_cfg`'s training
  latent before `switch_step` and with `final_phase_config(model_cfg)`'s from it on. Both losses
  are in the one compiled step (`lax.cond` runs one of them); metrics add `train_phase` (0 or 1)."""
  first = make_loss(encoder, decoder, model_cfg)
  final = make_loss(encoder, decoder, final_phase_config(model_cfg))

  def step_loss(params, batch, rng, step):
    in_final = jnp.asarray(step) >= switch_step
    loss, metrics = jax.lax.cond(in_final, final, first, params, batch, rng)
    return loss, metrics | {"train_phase": in_final.astype(jnp.float32)}

  return step_loss
