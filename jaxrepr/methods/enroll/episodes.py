"""Open-set enrollment episodes (the scenario generator), drawn on device from (seed, example id).

An episode, from a pool of identities (a `Table` built from any embedding source):
1. Scenario: n_id gallery identities and w walks (samples) per identity, drawn per episode from
   `n_id_range` and `walks_range` (inclusive) in training, or given per episode (evaluation grids).
2. Gallery: n_id identities chosen uniformly without replacement from the pool; each enrolls
   min(w, available) of its samples, chosen at random. With `probe_groups` (the source's `group`
   values reserved for probes, e.g. other walking conditions) gallery samples come only from the
   other groups; otherwise one sample of each gallery identity is always left out of the gallery.
3. Probe: with probability `known_fraction` (label 1, "known") a held-out sample of a gallery
   identity chosen uniformly among the n_id, never a gallery sample; otherwise (label 0, "new") a
   sample of an identity outside the gallery (the next identity of the same permutation).
4. Context: the K = `context_size` gallery samples nearest to the probe under `distance`
   ('cosine': 1 - cos, or 'l2'), sorted by distance, padded with a mask when the gallery has fewer
   than K samples. Their gallery labels are known at enrollment time, so each context element
   carries its gallery identity slot and that identity's number of enrolled walks.

Arrays are padded to the range maxima (n_id_max * w_max gallery slots), so one compiled program
serves every ratio. Example `i` is drawn from `fold_in(fold_in(key(seed), 0), i)` and its scenario
from `fold_in(fold_in(key(seed), 1), i)`: the numbers depend only on (seed, example id), not on the
device count, the batch's row order or a resume.

Episode fields (per example): probe (d,), ctx_emb (K, d), ctx_dist (K,), ctx_pair (K, K) distances
among the context, ctx_label (K,) gallery identity slot, ctx_walks (K,), ctx_mask (K,) bool,
label () int32 (1 known / 0 new), n_id (), walks () and gallery_size () int32.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

DISTANCES = ("cosine", "l2")
Table = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Scenario:
  """Static episode settings (hashable, so they can shape a compiled program)."""

  n_id_range: tuple[int, int] = (5, 40)
  walks_range: tuple[int, int] = (1, 8)
  context_size: int = 16
  distance: str = "cosine"
  known_fraction: float = 0.5

  def __post_init__(self):
    (a, b), (c, d) = self.n_id_range, self.walks_range
    if not (1 <= a <= b and 1 <= c <= d):
      raise ValueError(
        f"scenario ranges must satisfy 1 <= min <= max, got n_id_range "
        f"{self.n_id_range} and walks_range {self.walks_range}"
      )
    if self.context_size < 1:
      raise ValueError(f"context_size must be >= 1, got {self.context_size}")
    if self.distance not in DISTANCES:
      raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
    if not 0.0 <= self.known_fraction <= 1.0:
      raise ValueError(f"known_fraction must be in [0, 1], got {self.known_fraction}")


def scenario_from_config(cfg, **overrides) -> Scenario:
  fields = dict(
    n_id_range=tuple(cfg.n_id_range),
    walks_range=tuple(cfg.walks_range),
    context_size=cfg.context_size,
    distance=cfg.distance,
    known_fraction=cfg.known_fraction,
  )
  fields.update(overrides)
  return Scenario(**fields)


def make_table(source: dict[str, np.ndarray], probe_groups=()) -> dict[str, np.ndarray]:
  """Host arrays describing the identity pool of `source` (see `generate`).

  Identities that cannot enroll and still leave a held-out probe (one sample only; or, with
  `probe_groups`, no sample in either part) are dropped; `num_dropped` counts them.
  """
  x, labels = np.asarray(source["embeddings"], np.float32), np.asarray(source["labels"])
  if probe_groups:
    if "group" not in source:
      raise ValueError("probe_groups needs a source with a 'group' array")
    probe_ok = np.isin(source["group"], np.asarray(probe_groups))
    gallery_ok = ~probe_ok
  else:
    probe_ok = gallery_ok = np.ones(len(labels), bool)
  ids, inverse = np.unique(labels, return_inverse=True)
  rows = [np.flatnonzero(inverse == i) for i in range(len(ids))]
  keep = [
    r
    for r in rows
    if (len(r) >= 2 if not probe_groups else gallery_ok[r].any() and probe_ok[r].any())
  ]
  if len(keep) < 2:
    raise ValueError(f"the source has {len(keep)} usable identities; enrollment needs >= 2")
  width = max(len(r) for r in keep)
  members = np.zeros((len(keep), width), np.int32)
  valid = np.zeros((len(keep), width), bool)
  for i, r in enumerate(keep):
    members[i, : len(r)], valid[i, : len(r)] = r, True
  return {
    "embeddings": x,
    "members": members,
    "valid": valid,
    "gallery_ok": valid & gallery_ok[members],
    "probe_ok": valid & probe_ok[members],
    "num_dropped": np.asarray(len(rows) - len(keep)),
    "identity": ids[[inverse[r[0]] for r in keep]].astype(np.int32),
  }


def device_table(table: dict[str, np.ndarray]) -> Table:
  return {
    k: jnp.asarray(table[k]) for k in ("embeddings", "members", "valid", "gallery_ok", "probe_ok")
  }


def num_identities(table) -> int:
  return int(table["members"].shape[0])


def check_pool(table, scenario: Scenario, field: str) -> None:
  """The pool must hold n_id_max gallery identities plus one new identity."""
  n = num_identities(table)
  if scenario.n_id_range[1] >= n:
    raise ValueError(
      f"{field}: n_id up to {scenario.n_id_range[1]} needs more than that many "
      f"usable identities in the source, which has {n}"
    )


def distances(p_D: jax.Array, g_NxD: jax.Array, kind: str) -> jax.Array:
  """Distances from one point to each row: 1 - cos, or Euclidean."""
  if kind == "cosine":
    pn = p_D / jnp.maximum(jnp.linalg.norm(p_D), 1e-12)
    gn = g_NxD / jnp.maximum(jnp.linalg.norm(g_NxD, axis=-1, keepdims=True), 1e-12)
    return 1.0 - gn @ pn
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(g_NxD - p_D[None, :]), axis=-1), 0.0))


def _first_where(score_S: jax.Array, ok_S: jax.Array) -> jax.Array:
  """Index of the smallest score among ok entries (the first entry if none is ok)."""
  return jnp.argmin(jnp.where(ok_S, score_S, 2.0))


def episode(
  table: Table,
  key: jax.Array,
  n_id: jax.Array,
  walks: jax.Array,
  scenario: Scenario,
  known: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """One episode with the given (traced) n_id and walks; see the module docstring. `known`, a
  traced probability, replaces scenario.known_fraction (a test-time prior sweep without a
  recompile; the same key gives the same label draw u < p, so sweeps over p are paired)."""
  n_max, w_max, K = scenario.n_id_range[1], scenario.walks_range[1], scenario.context_size
  members = table["members"]
  g_ok, p_ok = table["gallery_ok"], table["probe_ok"]
  I, S = members.shape
  k_ids, k_gal, k_held, k_slot, k_new, k_label = jax.random.split(key, 6)
  id_perm_I = jnp.argsort(jax.random.uniform(k_ids, (I,)))
  gal_ids_N = id_perm_I[:n_max]
  slot_ok_N = jnp.arange(n_max) < n_id

  # gallery walks of each slot: the first w of a random order of its gallery candidates
  u_NxS = jax.random.uniform(k_gal, (n_max, S))
  cand_NxS = g_ok[gal_ids_N]
  order_NxS = jnp.argsort(jnp.where(cand_NxS, u_NxS, 2.0), axis=1)
  rank_NxS = jnp.argsort(order_NxS, axis=1)  # position of each member in that order
  probe_only_N = jnp.any(p_ok[gal_ids_N] & ~cand_NxS, axis=1)
  w_N = jnp.minimum(walks, jnp.sum(cand_NxS, axis=1) - jnp.where(probe_only_N, 0, 1))
  in_gal_NxS = cand_NxS & (rank_NxS < w_N[:, None])
  gal_idx_NxW = jnp.take_along_axis(members[gal_ids_N], order_NxS[:, : min(w_max, S)], axis=1)
  if S < w_max:  # fewer samples per identity than walk slots: w_N <= S anyway
    gal_idx_NxW = jnp.pad(gal_idx_NxW, ((0, 0), (0, w_max - S)))
  gal_mask_NxW = slot_ok_N[:, None] & (jnp.arange(w_max)[None, :] < w_N[:, None])

  # known probe: a held-out sample (not in the gallery) of a uniformly chosen gallery slot
  slot = jax.random.randint(k_slot, (), 0, n_id)
  held_S = jax.random.uniform(k_held, (S,))
  known_member = _first_where(held_S, p_ok[gal_ids_N[slot]] & ~in_gal_NxS[slot])
  known_idx = members[gal_ids_N[slot], known_member]
  # new probe: a sample of the first identity outside the gallery
  new_id = id_perm_I[n_id]
  new_idx = members[new_id, _first_where(jax.random.uniform(k_new, (S,)), p_ok[new_id])]
  p_known = scenario.known_fraction if known is None else known
  label = jax.random.bernoulli(k_label, p_known).astype(jnp.int32)
  probe_D = table["embeddings"][jnp.where(label == 1, known_idx, new_idx)]

  G = n_max * w_max
  gal_GxD = table["embeddings"][gal_idx_NxW.reshape(G)]
  gal_mask_G = gal_mask_NxW.reshape(G)
  slot_G = jnp.repeat(jnp.arange(n_max, dtype=jnp.int32), w_max)
  walks_G = jnp.repeat(w_N.astype(jnp.int32), w_max)
  d_G = distances(probe_D, gal_GxD, scenario.distance)
  k = min(K, G)
  _, top_k = jax.lax.top_k(jnp.where(gal_mask_G, -d_G, -jnp.inf), k)
  pad = K - k
  ctx_mask = jnp.pad(gal_mask_G[top_k], (0, pad))
  ctx_emb = jnp.pad(gal_GxD[top_k], ((0, pad), (0, 0)))
  ctx_dist = jnp.where(ctx_mask, jnp.pad(d_G[top_k], (0, pad)), 0.0)
  ctx_pair = jax.vmap(lambda g: distances(g, ctx_emb, scenario.distance))(ctx_emb)
  pair_ok = ctx_mask[:, None] & ctx_mask[None, :] & ~jnp.eye(K, dtype=bool)
  return {
    "probe": probe_D,
    "ctx_emb": jnp.where(ctx_mask[:, None], ctx_emb, 0.0),
    "ctx_dist": ctx_dist,
    "ctx_pair": jnp.where(pair_ok, ctx_pair, 0.0),
    "ctx_label": jnp.where(ctx_mask, jnp.pad(slot_G[top_k], (0, pad)), -1),
    "ctx_walks": jnp.where(ctx_mask, jnp.pad(walks_G[top_k], (0, pad)), 0),
    "ctx_mask": ctx_mask,
    "label": label,
    "n_id": n_id.astype(jnp.int32),
    "walks": walks.astype(jnp.int32),
    "gallery_size": jnp.sum(gal_mask_G).astype(jnp.int32),
    # indices into the source, for tests and audits
    "probe_index": jnp.where(label == 1, known_idx, new_idx),
    "gallery_index": jnp.where(gal_mask_G, gal_idx_NxW.reshape(G), -1),
  }


def draw_scenarios(
  root: jax.Array, example_id_B: jax.Array, scenario: Scenario
) -> tuple[jax.Array, jax.Array]:
  """Per-episode (n_id, walks), uniform over the inclusive ranges, keyed on the example id."""
  keys_B = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 1), i))(example_id_B)

  def one(k):
    k1, k2 = jax.random.split(k)
    return (
      jax.random.randint(k1, (), scenario.n_id_range[0], scenario.n_id_range[1] + 1),
      jax.random.randint(k2, (), scenario.walks_range[0], scenario.walks_range[1] + 1),
    )

  return jax.vmap(one)(keys_B)


def generate(
  table: Table,
  root: jax.Array,
  example_id_B: jax.Array,
  scenario: Scenario,
  n_id_B: jax.Array | None = None,
  walks_B: jax.Array | None = None,
  known_B: jax.Array | None = None,
):
  """A batch of episodes (jittable). n_id_B / walks_B default to draws from the scenario ranges;
  given ones must lie within them (they fix the padded sizes). known_B (float, per episode)
  replaces scenario.known_fraction, the probability of a known probe."""
  if (n_id_B is None) != (walks_B is None):
    raise ValueError("give both n_id and walks per episode, or neither")
  if n_id_B is None:
    n_id_B, walks_B = draw_scenarios(root, example_id_B, scenario)
  keys_B = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, 0), i))(example_id_B)
  if known_B is None:
    return jax.vmap(lambda k, n, w: episode(table, k, n, w, scenario))(keys_B, n_id_B, walks_B)
  return jax.vmap(lambda k, n, w, p: episode(table, k, n, w, scenario, p))(
    keys_B, n_id_B, walks_B, known_B
  )
