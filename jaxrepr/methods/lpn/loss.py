"""LPN leave-one-out training loss (method sheet §3; paper Eq. 8 and Alg. 2).

For a task of N pairs: encode every pair once, z_j = mu_j + sigma_j eps_j; for each i the context c_i
uses only the other N-1 latents, starting at z'_{i,0} = mean_{j != i} z_j (a fixed (1 - I)/(N-1)
mixing matrix, so z_i enters c_i with an exact zero weight):
  - 'mean' [Grad 0]: c_i = z'_{i,0};
  - 'gradient_ascent' [Grad k]: k Adam steps (b1 = b2 = 0.9, eps_root 1e-8) on -score_{-i} from
    z'_{i,0}, each latent's gradient clipped to norm 1 on its own (the reference code clips over the
    whole device batch, coupling tasks; sheet §4). `select='best'` returns the best of the k+1 visited
    latents by score_{-i} (reference code); `select='last'` the last iterate (paper Alg. 2).
    `stop_gradient=True`: c_i = z'_{i,0} + sg(move); False: second-order terms flow [Grad k **];
  - 'random_search' [Sample S]: the best of z'_{i,0} and z'_{i,0} + scale * eps_s, s = 1..S
    (reference code; the paper says encoder samples, see search.encoder_sampling).
Loss = mean over tasks and pairs of [-log p(y_i | x_i, c_i) + beta KL(q(z | x_i, y_i) || N(0, I))],
-log p = CE(rows) + CE(cols) + mean CE over the valid output cells (reference code), teacher-forced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrepr.methods.lpn.model import NUM_COLOURS, cell_valid
from jaxrepr.errors import ConfigError


def pair_log_prob(row_logits_BxR, col_logits_BxC, grid_BxRxCx10, y_BxRxC, y_shape_Bx2):
  """log p(R) + log p(C) + mean valid-cell log p, and per-pair accuracy statistics."""
  b, r, c = y_BxRxC.shape
  lp_rows = jnp.take_along_axis(jax.nn.log_softmax(row_logits_BxR.astype(jnp.float32)),
                                y_shape_Bx2[:, 0:1] - 1, axis=1)[:, 0]
  lp_cols = jnp.take_along_axis(jax.nn.log_softmax(col_logits_BxC.astype(jnp.float32)),
                                y_shape_Bx2[:, 1:2] - 1, axis=1)[:, 0]
  grid_lp = jax.nn.log_softmax(grid_BxRxCx10.astype(jnp.float32).reshape(b, r * c, NUM_COLOURS))
  y_BxK = y_BxRxC.reshape(b, r * c)
  lp_cells_BxK = jnp.take_along_axis(grid_lp, y_BxK[:, :, None], axis=2)[:, :, 0]
  valid_BxK = cell_valid(y_shape_Bx2, r, c)
  n_valid = jnp.sum(valid_BxK, axis=1)
  lp_grid = jnp.sum(jnp.where(valid_BxK, lp_cells_BxK, 0.0), axis=1) / n_valid
  cell_ok = (jnp.argmax(grid_lp, axis=-1) == y_BxK) | ~valid_BxK
  shape_ok = ((jnp.argmax(row_logits_BxR, -1) + 1 == y_shape_Bx2[:, 0])
              & (jnp.argmax(col_logits_BxC, -1) + 1 == y_shape_Bx2[:, 1]))
  stats = {"cell_accuracy": (jnp.sum(cell_ok, axis=1) - (r * c - n_valid)) / n_valid,
           "exact_match": (shape_ok & jnp.all(cell_ok, axis=1)).astype(jnp.float32)}
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
  logits = decoder.apply(dparams, g[..., 0], s[:, :, 0], z.reshape((g.shape[0], -1)), g[..., 1],
                         s[:, :, 1], latent_grad_only)
  lp, stats = pair_log_prob(*logits, g[..., 1], s[:, :, 1])
  return lp.reshape(lead), jax.tree.map(lambda v: v.reshape(lead), stats)


def others_index(n: int) -> np.ndarray:
  """(N, N-1): for each i, the indices j != i in increasing order."""
  return np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32)


def _loo_spec_score(decoder, dparams, grids, shapes, per_position: bool = False,
                    latent_grad_only: bool = False):
  """score_{-i}(z_i) for all i: (B, N, Z) -> (B, N), summed over the other pairs.

  Returns (score, value_and_grad): `value_and_grad(z)` gives the scores and each latent's own
  gradient. All B x N x (N-1) decodes run at once, or with `per_position` one LOO position i at a
  time (`_map_positions`; each latent's score involves only its own position, so this is the
  same arithmetic with about 1/N of the activation memory). `latent_grad_only`: see `pair_scores`.
  """
  n = grids.shape[1]
  idx = others_index(n)
  spec_g, spec_s = grids[:, idx], shapes[:, idx]             # (B, N, N-1, ...)

  def score(z_BxNxZ):
    if per_position:
      return _map_positions(functools.partial(_position_score, decoder, dparams,
                                              latent_grad_only=latent_grad_only),
                            z_BxNxZ, grids, shapes)
    z_rep = jnp.broadcast_to(z_BxNxZ[:, :, None, :], spec_g.shape[:3] + z_BxNxZ.shape[-1:])
    return jnp.sum(pair_scores(decoder, dparams, spec_g, spec_s, z_rep, latent_grad_only)[0],
                   axis=2)
  return score, functools.partial(_scores_and_grad, score)


def _map_positions(fn, z_BxNxZ, grids, shapes, out_axis: int = 1):
  """fn(z_i (B, Z), the other pairs' grids (B, N-1, ...), their shapes) for each LOO position i,
  one position at a time (lax.map); each output's position axis moves to `out_axis`."""
  idx = others_index(grids.shape[1])
  out = jax.lax.map(lambda args: fn(*args), (jnp.swapaxes(z_BxNxZ, 0, 1),
                                             jnp.swapaxes(grids[:, idx], 0, 1),
                                             jnp.swapaxes(shapes[:, idx], 0, 1)))
  return jax.tree.map(lambda x: jnp.moveaxis(x, 0, out_axis), out)


def _position_score(decoder, dparams, z_BxZ, g_BxMx, s_BxMx, latent_grad_only: bool = False):
  """Summed log p of one LOO position's M = N-1 other pairs (B, M, ...) under its latents (B, Z)."""
  z_rep = jnp.broadcast_to(z_BxZ[:, None, :], g_BxMx.shape[:2] + z_BxZ.shape[-1:])
  return jnp.sum(pair_scores(decoder, dparams, g_BxMx, s_BxMx, z_rep, latent_grad_only)[0], axis=1)


def _ascent_by_position(decoder, dparams, grids, shapes, z0_BxNxZ, steps: int, lr: float,
                        score_last: bool):
  """`gradient_ascent` (stop-gradient moves, latent-only gradients) from every LOO start, one
  position at a time with its whole ascent inside: the same numbers as all positions at once (Adam
  and the clipping act per latent), with 1/N of the activations, and each position's
  z-independent first-layer constants (`Decoder(latent_grad_only=True)`) computed once for all its
  passes (XLA shares them), not once per pass. Returns visited (K+1, B, N, Z), scores (K+1, B, N)."""
  score_at = functools.partial(_position_score, decoder, dparams, latent_grad_only=True)

  def one_position(z_BxZ, g, s):
    return gradient_ascent(lambda z: score_at(z, g, s), z_BxZ, steps, lr, True, score_last,
                           lambda z: _scores_and_grad(score_at, z, g, s))
  return _map_positions(one_position, z0_BxNxZ, grids, shapes, out_axis=2)


def _scores_and_grad(score_fn, z, *args):
  """(score_fn(z, *args), gradient of its sum w.r.t. z): each latent's own gradient."""
  def total(zz):
    v = score_fn(zz, *args)
    return jnp.sum(v), v
  (_, v), grad = jax.value_and_grad(total, has_aux=True)(z)
  return v, grad


def latent_adam(lr: float) -> optax.GradientTransformation:
  """Test-time/LOO latent optimiser of the reference configs: Adam b1 0.9, b2 0.9, eps_root 1e-8."""
  return optax.adam(lr, b1=0.9, b2=0.9, eps_root=1e-8)


def clip_per_latent(g_xZ: jax.Array, max_norm: float = 1.0) -> jax.Array:
  """Clips each latent's gradient (last axis) to `max_norm` on its own."""
  norm = jnp.sqrt(jnp.sum(jnp.square(g_xZ), axis=-1, keepdims=True) + 1e-12)
  return g_xZ * jnp.minimum(1.0, max_norm / norm)


def gradient_ascent(score_fn, z0, steps: int, lr: float, stop_gradient: bool = True,
                    score_last: bool = True, value_and_grad_fn=None):
  """Runs `steps` Adam steps on -score from z0 (..., Z).

  score_fn maps (..., Z) -> (...) with independent entries, so the gradient of its sum is each
  latent's own gradient. Returns visited latents (K+1, ..., Z) and their scores (K+1, ...) (the last
  score is -inf when `score_last` is False, which saves one forward pass). With `stop_gradient` the
  moves carry no derivative (the caller differentiates through z0 only). `value_and_grad_fn`
  (z -> (scores, per-latent gradients)) replaces the default gradient of the summed scores.
  """
  opt = latent_adam(lr)
  state = opt.init(z0)
  if value_and_grad_fn is None:
    value_and_grad_fn = lambda zz: _scores_and_grad(score_fn, zz)  # noqa: E731
  z, visited, scores = z0, [z0], []
  for _ in range(steps):
    s, g = value_and_grad_fn(z)
    g = clip_per_latent(g)
    if stop_gradient:
      g = jax.lax.stop_gradient(g)
    upd, state = opt.update(-g, state, z)
    z = z + upd
    visited.append(z)
    scores.append(s)
  scores.append(score_fn(z) if score_last else jnp.full(z.shape[:-1], -jnp.inf))
  return jnp.stack(visited), jnp.stack(scores)


def select_best(visited_KxNxZ, scores_KxN):
  """The visited latent with the highest score, per entry (argmax carries no gradient)."""
  best = jnp.argmax(jax.lax.stop_gradient(scores_KxN), axis=0)
  onehot = jax.nn.one_hot(best, scores_KxN.shape[0], axis=0, dtype=visited_KxNxZ.dtype)
  return jnp.sum(onehot[..., None] * visited_KxNxZ, axis=0)


def loo_contexts(decoder, dparams, grids, shapes, z0_BxNxZ, rng, lat_cfg):
  """c_i for every pair from its LOO start z'_{i,0} (B, N, Z) and the other pairs only."""
  mode = lat_cfg.mode
  if mode == "mean":
    return z0_BxNxZ
  if mode == "gradient_ascent":
    if lat_cfg.stop_gradient:
      dparams_sg = jax.lax.stop_gradient(dparams)
      z0_sg = jax.lax.stop_gradient(z0_BxNxZ)
      if lat_cfg.get("per_position", True):
        visited, scores = _ascent_by_position(decoder, dparams_sg, grids, shapes, z0_sg,
                                              lat_cfg.steps, lat_cfg.lr, lat_cfg.select == "best")
      else:
        score, value_and_grad = _loo_spec_score(decoder, dparams_sg, grids, shapes,
                                                latent_grad_only=True)
        visited, scores = gradient_ascent(score, z0_sg, lat_cfg.steps, lat_cfg.lr, True,
                                          lat_cfg.select == "best", value_and_grad)
      chosen = select_best(visited, scores) if lat_cfg.select == "best" else visited[-1]
      return z0_BxNxZ + jax.lax.stop_gradient(chosen - z0_sg)
    score, _ = _loo_spec_score(decoder, dparams, grids, shapes)
    visited, scores = gradient_ascent(score, z0_BxNxZ, lat_cfg.steps, lat_cfg.lr, False,
                                      lat_cfg.select == "best")
    return select_best(visited, scores) if lat_cfg.select == "best" else visited[-1]
  if mode == "random_search":
    score, _ = _loo_spec_score(decoder, jax.lax.stop_gradient(dparams), grids, shapes,
                               lat_cfg.get("per_position", True))
    z0_sg = jax.lax.stop_gradient(z0_BxNxZ)
    eps_SxBxNxZ = jax.random.normal(rng, (lat_cfg.num_samples,) + z0_sg.shape)
    offsets = jnp.concatenate([jnp.zeros_like(eps_SxBxNxZ[:1]), lat_cfg.scale * eps_SxBxNxZ])
    scores = jax.lax.map(lambda off: score(z0_sg + off), offsets)   # one candidate at a time
    return z0_BxNxZ + select_best(offsets, scores)
  raise ConfigError(f"config.model.train_latent.mode must be 'mean', 'gradient_ascent' or "
                    f"'random_search', got {mode!r}")


def check_batch(batch, model_cfg) -> None:
  """Clear errors for batches the model cannot read (runs at trace time)."""
  g, s = batch.get("grids"), batch.get("shapes")
  if g is None or s is None:
    raise ValueError(f"an LPN batch needs 'grids' and 'shapes', got keys {sorted(batch)}")
  want = (model_cfg.max_rows, model_cfg.max_cols, 2)
  if g.ndim != 5 or tuple(g.shape[2:]) != want:
    raise ValueError(f"batch['grids'] must be (B, N, {want[0]}, {want[1]}, 2), got {g.shape}")
  if tuple(s.shape) != tuple(g.shape[:2]) + (2, 2):
    raise ValueError(f"batch['shapes'] must be (B, N, 2, 2) = {g.shape[:2] + (2, 2)}, got {s.shape}")
  if g.shape[1] < 2:
    raise ValueError(f"leave-one-out training needs N >= 2 pairs per task, got N = {g.shape[1]}")
  if not (jnp.issubdtype(g.dtype, jnp.integer) and jnp.issubdtype(s.dtype, jnp.integer)):
    raise ValueError(f"grids and shapes must be integer arrays, got {g.dtype} and {s.dtype}")


def loo_terms(encoder, decoder, params, grids, shapes, rng, model_cfg, enc_grids=None,
              enc_shapes=None):
  """Per-pair terms (B, N): nll, kl and accuracy statistics, plus contexts (B, N, Z).

  `enc_grids`/`enc_shapes` (default: the same pairs) are what the encoder reads; tests use them to
  change only the encoder input of one pair.
  """
  b, n = grids.shape[:2]
  r, c = grids.shape[2:4]
  enc_grids = grids if enc_grids is None else enc_grids
  enc_shapes = shapes if enc_shapes is None else enc_shapes
  mu, logvar = encoder.apply(params["encoder"], enc_grids.reshape(b * n, r, c, 2),
                             enc_shapes.reshape(b * n, 2, 2))
  mu_BxNxZ, logvar_BxNxZ = mu.reshape(b, n, -1), logvar.reshape(b, n, -1)
  rng_eps, rng_search = jax.random.split(rng)
  eps = jax.random.normal(rng_eps, mu_BxNxZ.shape)
  z_BxNxZ = mu_BxNxZ + jnp.exp(0.5 * logvar_BxNxZ) * eps
  mix_NxN = jnp.asarray((1.0 - np.eye(n)) / (n - 1), jnp.float32)
  z0_BxNxZ = jnp.einsum("ij,bjz->biz", mix_NxN, z_BxNxZ)
  ctx_BxNxZ = loo_contexts(decoder, params["decoder"], grids, shapes, z0_BxNxZ, rng_search,
                           model_cfg.train_latent)
  lp_BxN, stats = pair_scores(decoder, params["decoder"], grids, shapes, ctx_BxNxZ)
  kl_BxN = 0.5 * jnp.sum(jnp.square(mu_BxNxZ) + jnp.exp(logvar_BxNxZ) - 1.0 - logvar_BxNxZ, -1)
  return {"nll": -lp_BxN, "kl": kl_BxN, "context": ctx_BxNxZ, **stats}


def make_loss(encoder, decoder, model_cfg):
  """(params, batch, rng) -> (loss, metrics); every term is a plain mean over tasks and pairs."""

  def loss_fn(params, batch, rng):
    check_batch(batch, model_cfg)
    t = loo_terms(encoder, decoder, params, batch["grids"], batch["shapes"], rng, model_cfg)
    nll, kl = jnp.mean(t["nll"]), jnp.mean(t["kl"])
    loss = nll + model_cfg.kl_coeff * kl
    return loss, {"loss": loss, "nll": nll, "kl": kl,
                  "cell_accuracy": jnp.mean(t["cell_accuracy"]),
                  "exact_match": jnp.mean(t["exact_match"])}
  return loss_fn
