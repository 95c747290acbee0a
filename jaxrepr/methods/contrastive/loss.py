"""Contrastive losses as pure functions of representations: CLIP's symmetric InfoNCE, ConVIRT's
asymmetric weighting, pairwise CLIP for M > 2 modalities, and Symile with the multilinear inner
product (MIP) and its two negative-sampling schemes; plus the zero-shot retrieval scores.

Every function takes the representations of the whole (global) batch, `r_NxD` per modality, so
under `jax.jit` with the batch sharded over the mesh the negatives of each row come from every
device: the number is the same on one device and on many.

References: Symile, Saporta et al., NeurIPS 2024 (section 3: MIP, Eq. 1; the Symile objective,
Eq. 3, a sum over anchors of InfoNCE terms with the MIP as critic; section 3.3: negative sampling);
CLIP, Radford et al., ICML 2021 (Fig. 3 pseudocode: symmetric cross-entropy, section 2.5: learned
temperature initialised at 0.07, logits scale clipped at 100); ConVIRT, Zhang et al., MLHC 2022
(section 2, Eqs. 2-4: l(v->u), l(u->v) and their lambda-weighted mean at a fixed tau).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

# CLIP (section 2.5): temperature initialised to 0.07, i.e. t = log(1/0.07); scale clipped at 100.
CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)
CLIP_MAX_LOGIT_SCALE = 100.0
NEGATIVE_SAMPLING = ("n", "n_squared")
PAIRWISE_REDUCE = ("sum", "mean")


def logit_scale(t: jax.Array, max_scale: float = 0.0) -> jax.Array:
  """s = exp(t), clipped at `max_scale` when > 0 (CLIP clips at 100; the Symile reference code
  does not clip). Past the clip the gradient on t is zero, as after CLIP's in-place clamp."""
  s = jnp.exp(t.astype(jnp.float32))
  return jnp.minimum(s, max_scale) if max_scale > 0 else s


def mip(*reps: jax.Array) -> jax.Array:
  """MIP(r_1, ..., r_M) = sum_i prod_m r_{m,i} over the last axis (Symile, Eq. 1)."""
  prod = reps[0]
  for r in reps[1:]:
    prod = prod * r
  return prod.sum(-1)


def cross_entropy(logits_NxC: jax.Array, labels_N: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the rows, in float32."""
  logits_NxC = logits_NxC.astype(jnp.float32)
  return optax.softmax_cross_entropy_with_integer_labels(logits_NxC, labels_N).mean()


def _diagonal_labels(n: int) -> jax.Array:
  return jnp.arange(n, dtype=jnp.int32)


def infonce(u_NxD: jax.Array, v_NxD: jax.Array, scale: jax.Array) -> jax.Array:
  """CLIP's symmetric InfoNCE: 1/2 [CE(s U V^T, I) + CE(s V U^T, I)] (CLIP, Fig. 3).

  Cosine similarity is the caller's choice: pass L2-normalised representations."""
  logits_NxN = scale * (u_NxD @ v_NxD.T)
  labels = _diagonal_labels(u_NxD.shape[0])
  return 0.5 * (cross_entropy(logits_NxN, labels) + cross_entropy(logits_NxN.T, labels))


def convirt(v_NxD: jax.Array, u_NxD: jax.Array, tau: float, lam: float) -> jax.Array:
  """ConVIRT's loss (Eqs. 2-4): (1/N) sum_i [lam l_i(v->u) + (1 - lam) l_i(u->v)] at fixed tau;
  v the image (anchor of l(v->u)), u the text. lam = 1/2 is CLIP's loss at scale 1/tau."""
  logits_NxN = (v_NxD @ u_NxD.T) / tau
  labels = _diagonal_labels(v_NxD.shape[0])
  return lam * cross_entropy(logits_NxN, labels) + (1 - lam) * cross_entropy(logits_NxN.T, labels)


def pairwise_infonce(reps: Sequence[jax.Array], scale: jax.Array, reduce: str = "sum") -> jax.Array:
  """Pairwise CLIP for M modalities: the symmetric InfoNCE of every pair m < m'. The Symile
  reference code SUMS the pairs (L_ab + L_bc + L_ac for M = 3), which triples the gradient of a
  mean; `reduce='mean'` averages them instead."""
  if reduce not in PAIRWISE_REDUCE:
    raise ValueError(f"reduce={reduce!r} is not one of {PAIRWISE_REDUCE}")
  terms = [
    infonce(reps[i], reps[j], scale) for i in range(len(reps)) for j in range(i + 1, len(reps))
  ]
  total = sum(terms[1:], terms[0])
  return total / len(terms) if reduce == "mean" else total


def rolled_stack(r_NxD: jax.Array) -> jax.Array:
  """R[b, j] = r[(j - b) mod N]: the N row-rolls of r (torch.roll by b along rows)."""
  n = r_NxD.shape[0]
  idx_NxN = (jnp.arange(n)[None, :] - jnp.arange(n)[:, None]) % n
  return r_NxD[idx_NxN]


def all_combination_products(non_anchor: Sequence[jax.Array]) -> jax.Array:
  """The (N^K, D) elementwise products of every combination of rows of the K >= 1 non-anchor
  modalities, in the Symile reference code's column order (`compute_non_anchor_products`).

  K = 1: the rows themselves. K >= 2, modalities (t_1, ..., t_K): t_{K-1} is never rolled, every
  other t_k is rolled by its own offset b_k; column ((b_1 ... b_{K-2}, b_K) as a base-N number) *
  N + j holds t_{K-1}[j] * prod_{k != K-1} t_k[(j - b_k) mod N]. For K = 2 (M = 3): column b*N + j
  is y_j * z_{(j-b) mod N}; all offsets 0 is the aligned block, so row n's positive is column n.
  """
  n, d = non_anchor[0].shape
  if len(non_anchor) == 1:
    return non_anchor[0]
  k = len(non_anchor)
  rolled = [i for i in range(k) if i != k - 2]  # every modality but t_{K-1} gets an offset axis
  prod = non_anchor[k - 2].reshape((1,) * len(rolled) + (n, d))
  for axis, i in enumerate(rolled):
    shape = [1] * len(rolled) + [n, d]
    shape[axis] = n
    prod = prod * rolled_stack(non_anchor[i]).reshape(shape)
  return prod.reshape(-1, d)


def symile_logits_n_squared(anchor_NxD: jax.Array, non_anchor: Sequence[jax.Array]) -> jax.Array:
  """O(N^{M-1}) logits: row n scores the anchor against every combination of non-anchor rows,
  shape (N, N^{M-1}); labels arange(N) (Symile section 3.3, all-combinations negatives)."""
  return anchor_NxD @ all_combination_products(non_anchor).T


def symile_logits_n(
  anchor_NxD: jax.Array, non_anchor: Sequence[jax.Array], perms: Sequence[jax.Array]
) -> jax.Array:
  """O(N) logits (N, N): column j = MIP(anchor_n, y_{pi_1(j)}, z_{pi_2(j)}, ...) for one row
  permutation per non-anchor modality, then the diagonal overwritten with the positive MIPs
  (Symile section 3.3; reference `compute_logits_n`)."""
  shuffled = jnp.ones_like(anchor_NxD)
  for r, perm in zip(non_anchor, perms):
    shuffled = shuffled * r[perm]
  logits_NxN = anchor_NxD @ shuffled.T
  positive_N = mip(anchor_NxD, *non_anchor)
  n = anchor_NxD.shape[0]
  return jnp.where(jnp.eye(n, dtype=bool), positive_N[:, None], logits_NxN)


def symile_anchor_logits(
  reps: Sequence[jax.Array], anchor: int, negative_sampling: str, rng: jax.Array | None
) -> jax.Array:
  """Unscaled logits of one anchor modality. M = 2 uses the N-column CLIP logits for both schemes:
  O(N^2) has N^{M-1} = N columns there, and O(N) with a random permutation would put the positive
  a second time in almost every row (its loss could not fall below log 2)."""
  others = [r for i, r in enumerate(reps) if i != anchor]
  if negative_sampling not in NEGATIVE_SAMPLING:
    raise ValueError(f"negative_sampling={negative_sampling!r} is not one of {NEGATIVE_SAMPLING}")
  if negative_sampling == "n_squared" or len(reps) == 2:
    return symile_logits_n_squared(reps[anchor], others)
  n = reps[anchor].shape[0]
  perms = [jax.random.permutation(k, n) for k in jax.random.split(rng, len(others))]
  return symile_logits_n(reps[anchor], others, perms)


def symile(
  reps: Sequence[jax.Array], scale: jax.Array, negative_sampling: str, rng: jax.Array | None
) -> jax.Array:
  """The Symile loss (Eq. 3 as implemented): (1/M) sum_m CE(s * logits_m, arange(N)), with fresh
  permutations for every anchor (O(N)) drawn from `rng`."""
  labels = _diagonal_labels(reps[0].shape[0])
  keys = jax.random.split(rng, len(reps)) if rng is not None else [None] * len(reps)
  losses = [
    cross_entropy(scale * symile_anchor_logits(reps, m, negative_sampling, keys[m]), labels)
    for m in range(len(reps))
  ]
  return sum(losses[1:], losses[0]) / len(reps)


def zeroshot_scores(
  candidates_KxD: jax.Array, queries: Sequence[jax.Array], scale: jax.Array, objective: str
) -> jax.Array:
  """(B, K) scores of K candidates of one modality given the other modalities' (B, D)
  representations. Symile: s <r_x(c), prod_m r_m> (reference `MIPSimilarity`). Pairwise CLIP:
  sum_m <r_m, r_x(c)> (the pair terms among the queries are constant over candidates, so left
  out); argmax is unchanged by the positive scale s."""
  if objective == "symile":
    query_BxD = queries[0]
    for q in queries[1:]:
      query_BxD = query_BxD * q
    return scale * (query_BxD @ candidates_KxD.T)
  total = sum(queries[1:], queries[0])
  return scale * (total @ candidates_KxD.T)
