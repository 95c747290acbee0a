"""Set elements fed to the enrollment SetTransformer, built from an episode (see episodes.py).

Two choices, both config fields (`config.model.input`, `config.model.probe`):

input='relational' (default): dimension-free features. Every number is a distance, a rank, a count
  or an identity-equality indicator, so the model accepts embeddings of any dimension d, and a
  model trained on one source can be applied to another with a different d without retraining (the
  cross-source claim is only testable this way). Gallery labels are known at enrollment time, so
  "shares the identity of the probe's nearest neighbour" and distances among same-identity context
  elements are legitimate inputs: they give the model the gallery's own within- and
  between-identity scales, which is what a fixed threshold lacks.
input='raw': the embeddings themselves (d must equal the training source's d), for the ablation.

probe='concat' (default): the probe enters every context element's features.
  relational: [d(p, g_k), d(p, g_k) - d(p, nn), rank_k / (number of valid context elements),
    same identity as the nearest neighbour,
    fraction of the context with g_k's identity, mean distance from g_k to the other context
    elements of its identity, has such elements, min distance from g_k to a context element of
    another identity, has such elements, log(1 + enrolled walks of g_k's identity),
    mean pairwise context distance]  (11 features, K elements)
  raw: [g_k, p, g_k - p, d(p, g_k), same identity as nn, log(1 + walks)]  (3d + 3)
probe='extra': the probe is one more set element with a type flag (K + 1 elements).
  relational: each element is described by its distance profile, i.e. its row of the
    (K + 1) x (K + 1) distance matrix over [probe, context sorted by distance to the probe], its
    row of the same-identity matrix, the column validity mask, and log(1 + walks)  (3(K + 1) + 2)
  raw: [x, is_probe, same identity as nn, log(1 + walks)]  (d + 3)

`scale` decides how absolute distances enter (relational input):
  'none'     raw distances.
  'context'  every distance divided by the mean pairwise distance among the valid context elements
             (1 when there are fewer than two): invariant to a global rescaling of the space.
  'ratio'    no absolute distance at all. concat: the five distance features become log-ratios,
             log d(p, g_k) minus the log of d(p, nn), of g_k's mean same-identity distance, of its
             nearest other-identity distance and of the context mean, and log(mean same-identity /
             nearest other-identity); extra: the distance profile in log space relative to the
             context mean. "Is the probe as close to g_k as g_k's own walks are to each other" is
             then a feature that means the same thing in every source.

Ranks and the nearest neighbour are computed from distances, not positions, so the features (and
the model) are invariant to the order of the context elements up to exact distance ties, and the
contents of padded elements (mask False) change nothing. With probe='concat' (and raw 'extra') the
element width does not depend on K, so appending padded elements changes nothing either; relational
'extra' elements have a row of width K + 1, fixed by the config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INPUTS = ("relational", "raw")
PROBES = ("concat", "extra")
SCALES = ("none", "context", "ratio")
_EPS = 1e-6


def num_elements(context_size: int, probe: str) -> int:
  return context_size + (1 if probe == "extra" else 0)


def _scale(ep: dict[str, jax.Array], scale: str) -> tuple[jax.Array, jax.Array]:
  m_BxK = ep["ctx_mask"]
  d_BxK = ep["ctx_dist"]
  P_BxKxK = ep["ctx_pair"]
  if scale in ("none", "ratio"):  # 'ratio' takes log-ratios per element (_relational_concat)
    return d_BxK, P_BxKxK
  pair_ok = m_BxK[:, :, None] & m_BxK[:, None, :] & ~jnp.eye(m_BxK.shape[1], dtype=bool)[None]
  n_pairs_B = jnp.sum(pair_ok, axis=(1, 2))
  ref_B = jnp.sum(jnp.where(pair_ok, P_BxKxK, 0.0), axis=(1, 2)) / jnp.maximum(n_pairs_B, 1)
  ref_B = jnp.where((n_pairs_B > 0) & (ref_B > 1e-6), ref_B, 1.0)
  return d_BxK / ref_B[:, None], P_BxKxK / ref_B[:, None, None]


def _nearest(d_BxK: jax.Array, m_BxK: jax.Array) -> jax.Array:
  return jnp.argmin(jnp.where(m_BxK, d_BxK, jnp.inf), axis=1)


def _relational_concat(ep, d_BxK, P_BxKxK, ratio: bool = False):
  m_BxK = ep["ctx_mask"]
  K = m_BxK.shape[1]
  mf_BxK = m_BxK.astype(jnp.float32)
  lab_BxK = ep["ctx_label"]
  nn_B = _nearest(d_BxK, m_BxK)
  d_nn_B = jnp.take_along_axis(d_BxK, nn_B[:, None], axis=1)[:, 0]
  lab_nn_B = jnp.take_along_axis(lab_BxK, nn_B[:, None], axis=1)[:, 0]
  valid_pair = m_BxK[:, :, None] & m_BxK[:, None, :]
  smaller = (d_BxK[:, None, :] < d_BxK[:, :, None]) & valid_pair  # [b, k, j]: d_j < d_k
  rank_BxK = jnp.sum(smaller, axis=2).astype(jnp.float32)
  n_valid_B = jnp.maximum(jnp.sum(mf_BxK, axis=1), 1.0)
  same = (lab_BxK[:, :, None] == lab_BxK[:, None, :]) & valid_pair
  same_other = same & ~jnp.eye(K, dtype=bool)[None]
  diff = valid_pair & ~same
  n_same_other = jnp.sum(same_other, axis=2).astype(jnp.float32)
  mean_same = jnp.sum(jnp.where(same_other, P_BxKxK, 0.0), axis=2) / jnp.maximum(n_same_other, 1.0)
  min_diff = jnp.min(jnp.where(diff, P_BxKxK, jnp.inf), axis=2)
  has_diff = jnp.any(diff, axis=2)
  pair_ok = valid_pair & ~jnp.eye(K, dtype=bool)[None]
  ctx_mean_B = jnp.sum(jnp.where(pair_ok, P_BxKxK, 0.0), axis=(1, 2)) / jnp.maximum(
    jnp.sum(pair_ok, axis=(1, 2)), 1
  )
  has_same = n_same_other > 0
  min_diff = jnp.where(has_diff, min_diff, 0.0)
  counts = [
    rank_BxK / n_valid_B[:, None],
    (lab_BxK == lab_nn_B[:, None]).astype(jnp.float32),
    jnp.sum(same, axis=2) / n_valid_B[:, None],
    has_same.astype(jnp.float32),
    has_diff.astype(jnp.float32),
    jnp.log1p(ep["ctx_walks"].astype(jnp.float32)),
  ]
  if ratio:  # no absolute distance: log-ratios of the probe distance to the element's references
    log = lambda a: jnp.log(jnp.maximum(a, _EPS))
    ld = log(d_BxK)
    dists = [
      ld - log(d_nn_B)[:, None],
      jnp.where(has_same, ld - log(mean_same), 0.0),
      jnp.where(has_diff, ld - log(min_diff), 0.0),
      jnp.where(has_same & has_diff, log(mean_same) - log(min_diff), 0.0),
      ld - log(ctx_mean_B)[:, None],
    ]
  else:
    dists = [
      d_BxK,
      d_BxK - d_nn_B[:, None],
      mean_same,
      min_diff,
      jnp.broadcast_to(ctx_mean_B[:, None], d_BxK.shape),
    ]
  feats = dists + counts
  x_BxKxF = jnp.stack(feats, axis=-1)
  return jnp.where(m_BxK[:, :, None], x_BxKxF, 0.0), m_BxK


def _relational_extra(ep, d_BxK, P_BxKxK):
  m_BxK = ep["ctx_mask"]
  B, K = m_BxK.shape
  order_BxK = jnp.argsort(jnp.where(m_BxK, d_BxK, jnp.inf), axis=1)  # canonical column order
  take = lambda a: jnp.take_along_axis(a, order_BxK, axis=1)
  d_s, m_s, lab_s, walks_s = take(d_BxK), take(m_BxK), take(ep["ctx_label"]), take(ep["ctx_walks"])
  P_s = jnp.take_along_axis(
    jnp.take_along_axis(P_BxKxK, order_BxK[:, :, None], axis=1), order_BxK[:, None, :], axis=2
  )
  # full (K+1) x (K+1) distance matrix over [probe, sorted context]
  top = jnp.concatenate([jnp.zeros((B, 1)), d_s], axis=1)[:, None, :]
  rest = jnp.concatenate([d_s[:, :, None], P_s], axis=2)
  D = jnp.concatenate([top, rest], axis=1)
  m_full = jnp.concatenate([jnp.ones((B, 1), bool), m_s], axis=1)
  lab_full = jnp.concatenate([jnp.full((B, 1), -2, lab_s.dtype), lab_s], axis=1)
  same = (lab_full[:, :, None] == lab_full[:, None, :]) & (lab_full[:, :, None] >= 0)
  col_ok = m_full[:, None, :] & m_full[:, :, None]
  D = jnp.where(col_ok & ~jnp.eye(K + 1, dtype=bool)[None], D, 0.0)
  same = (same & col_ok).astype(jnp.float32)
  is_probe = jnp.zeros((B, K + 1)).at[:, 0].set(1.0)
  walks = jnp.concatenate([jnp.zeros((B, 1)), jnp.log1p(walks_s.astype(jnp.float32))], axis=1)
  x = jnp.concatenate(
    [is_probe[:, :, None], D, same, col_ok.astype(jnp.float32), walks[:, :, None]], axis=-1
  )
  return jnp.where(m_full[:, :, None], x, 0.0), m_full


def _raw(ep, d_BxK, probe: str):
  m_BxK = ep["ctx_mask"]
  g_BxKxD, p_BxD = ep["ctx_emb"], ep["probe"]
  nn_B = _nearest(d_BxK, m_BxK)
  lab_nn_B = jnp.take_along_axis(ep["ctx_label"], nn_B[:, None], axis=1)
  same_BxK = (ep["ctx_label"] == lab_nn_B).astype(jnp.float32)
  walks_BxK = jnp.log1p(ep["ctx_walks"].astype(jnp.float32))
  if probe == "concat":
    p_BxKxD = jnp.broadcast_to(p_BxD[:, None, :], g_BxKxD.shape)
    x = jnp.concatenate(
      [
        g_BxKxD,
        p_BxKxD,
        g_BxKxD - p_BxKxD,
        d_BxK[:, :, None],
        same_BxK[:, :, None],
        walks_BxK[:, :, None],
      ],
      axis=-1,
    )
    return jnp.where(m_BxK[:, :, None], x, 0.0), m_BxK
  B, K, D = g_BxKxD.shape
  elems = jnp.concatenate([p_BxD[:, None, :], g_BxKxD], axis=1)
  flags = jnp.concatenate([jnp.ones((B, 1)), jnp.zeros((B, K))], axis=1)
  same = jnp.concatenate([jnp.zeros((B, 1)), same_BxK], axis=1)
  walks = jnp.concatenate([jnp.zeros((B, 1)), walks_BxK], axis=1)
  m_full = jnp.concatenate([jnp.ones((B, 1), bool), m_BxK], axis=1)
  x = jnp.concatenate([elems, flags[:, :, None], same[:, :, None], walks[:, :, None]], axis=-1)
  return jnp.where(m_full[:, :, None], x, 0.0), m_full


def set_elements(
  ep: dict[str, jax.Array], *, input: str = "relational", probe: str = "concat", scale: str = "none"
) -> tuple[jax.Array, jax.Array]:
  """Episode batch -> (elements (B, N, F), mask (B, N)); see the module docstring."""
  if input not in INPUTS or probe not in PROBES or scale not in SCALES:
    raise ValueError(
      f"set elements: input must be one of {INPUTS}, probe one of {PROBES}, scale "
      f"one of {SCALES}; got {input!r}, {probe!r}, {scale!r}"
    )
  d_BxK, P_BxKxK = _scale(ep, scale)
  if input == "raw":
    return _raw(ep, d_BxK, probe)
  if probe == "concat":
    return _relational_concat(ep, d_BxK, P_BxKxK, ratio=scale == "ratio")
  if scale == "ratio":  # the distance profile in log space, relative to the context's mean
    d_BxK, P_BxKxK = _scale(ep, "context")
    lg = lambda a: jnp.log(jnp.maximum(a, _EPS))
    return _relational_extra(ep, lg(d_BxK), lg(P_BxKxK))
  return _relational_extra(ep, d_BxK, P_BxKxK)
