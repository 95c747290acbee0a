"""Scaled dot-product attention cores: the plain XLA form and a blocked, memory-efficient form.

Both compute softmax(q k^T / sqrt(D) masked) v with logits and softmax statistics in float32, for
q (B, T, H, D), k and v (B, S, H, D) and a boolean mask broadcastable to (B, T, S) (one mask shared
by all heads), optionally ANDed with a static `structure` (T, S) shared by every sequence (which
segment of a sequence sees which: causal, prefix, LPN's decoder). Masked logits take the most
negative finite float and a fully masked row (no visible key) outputs zeros, in both forms, with
zero gradients; no gradient reaches q or k through masked logits.

- `'xla'`: materialises the (B, H, T, S) logits and probabilities; the backward pass keeps them.
- `'blocked'`: the FlashAttention recipe (Dao et al., 2022) written in JAX: attention runs over
  blocks of (sequences, queries) whose (H, tq, S) logits fit in `block_bytes` (a cache-sized
  working set), the softmax uses exp2 with log2(e) folded into the scale, and a custom VJP saves
  only q, k, v, the output and the per-row softmax max and sum, recomputing probabilities block by
  block in the backward pass. Peak memory is O(B T H D + block) instead of O(B H T S), and on CPUs,
  where the (T, S) arrays of the plain form do not fit in cache, it is also faster (see bench/).
  With a structure, the queries are split into at most two contiguous runs, each over only the keys
  it can see (`query_segments`: 75% of the pairs for LPN's decoder), and the structure enters each
  block as a constant, pre-transposed for the backward pass, instead of a per-sequence mask. A
  fully masked row is zeroed through its softmax normaliser (its max is the most negative float),
  so the backward pass's score gradient needs no mask pass of its own. The two forms agree
  to float32 rounding (tests/nn/test_attention.py). Reverse mode of any order works (JAX
  differentiates the custom rules themselves; LPN's Grad k ** needs it); forward mode (jax.jvp,
  jax.hessian) does not, as for every custom_vjp (under a batch-sharded mesh JAX's error message
  is less clear): use `'xla'` for that. Under a mesh that shards
  the batch (`jax.set_mesh`, axes `mesh_axes.BATCH_AXES`), the blocked form runs in a shard_map so
  that each device loops over its own sequences: XLA's sharding propagation cannot split a loop
  over the batch axis, and without it every device ran the loops over the whole global batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxrepr.nn._blocked_attention import StaticMask, _blocked, _blocked_fwd, _merge
from jaxrepr.nn.mesh_axes import BATCH_AXES

IMPLEMENTATIONS = ("auto", "blocked", "xla")
_LOG2E = float(np.log2(np.e))
_NEG = float(jnp.finfo(jnp.float32).min)


def dot_product_attention(
  q_BxTxHxD: jax.Array,
  k_BxSxHxD: jax.Array,
  v_BxSxHxD: jax.Array,
  mask: jax.Array,
  implementation: str = "auto",
  block_bytes: int = 2**23,
  shard_batch: bool = True,
  structure: np.ndarray | StaticMask | None = None,
) -> jax.Array:
  """Multi-head attention output (B, T, H, D) in the dtype of v (see module docstring).

  `structure`: an optional static (numpy) bool (T, S) mask shared by every sequence, ANDed with
  `mask` (e.g. LPN's decoder: which segment attends to which, while `mask` holds each sequence's
  valid keys as (B, 1, S)). The blocked form skips the keys that a whole run of queries cannot
  see (`query_segments`) and never materialises a per-sequence (T, S) mask.

  `shard_batch=False` leaves the batch axis to XLA's sharding propagation instead of a shard_map:
  for calls under jax.vmap over a sharded axis (evaluation that maps over tasks), where the
  shard_map would reshard the inner batch instead.

  `'auto'` is `'blocked'` on CPU, where the plain form is bound by memory traffic, and `'xla'` on
  GPU/TPU, where the sequential block loops would leave the accelerator idle.
  """
  implementation = _resolve(implementation)
  mask_BxTmxS, structure = _check_masks(q_BxTxHxD, k_BxSxHxD, mask, structure)
  if implementation == "xla":
    return _xla_attention(q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, _full_mask(mask_BxTmxS, structure))[0]

  def make(seqs, q_block, st):
    return lambda q, k, v, m: _blocked(q, k, v, m, StaticMask(st), seqs, q_block)

  return _segmented(
    make,
    q_BxTxHxD,
    k_BxSxHxD,
    v_BxSxHxD,
    mask_BxTmxS,
    structure,
    block_bytes,
    shard_batch,
    num_outputs=1,
  )


def attention_and_logsumexp(
  q_BxTxHxD: jax.Array,
  k_BxSxHxD: jax.Array,
  v_BxSxHxD: jax.Array,
  mask: jax.Array,
  implementation: str = "auto",
  block_bytes: int = 2**23,
  shard_batch: bool = True,
  structure: np.ndarray | StaticMask | None = None,
) -> tuple[jax.Array, jax.Array]:
  """(attention output (B, T, H, D), log-sum-exp of each row's masked logits (B, T, H), float32).

  For constants only: no gradient flows through it (the inputs are stop-gradient'd). With the
  log-sum-exp a row's softmax can be merged with keys added later (`transformer.Attention`'s
  one-token-gradient path). A fully masked row gives a log-sum-exp near the most negative float.
  `structure` as in `dot_product_attention`.
  """
  q, k, v = jax.lax.stop_gradient((q_BxTxHxD, k_BxSxHxD, v_BxSxHxD))
  implementation = _resolve(implementation)
  mask_BxTmxS, structure = _check_masks(q, k, mask, structure)
  if implementation == "xla":
    return _xla_attention(q, k, v, _full_mask(mask_BxTmxS, structure))

  def make(seqs, q_block, st):
    def run(q, k, v, m):
      out, res = _blocked_fwd(q, k, v, m, StaticMask(st), seqs, q_block)
      mx, tot = res[-1]  # (nb, nq, c, H, tq), base 2
      lse2 = jnp.swapaxes(mx + jnp.log2(tot), 3, 4)  # (nb, nq, c, tq, H)
      return out, _merge(lse2, q.shape[1]) / _LOG2E

    return run

  return _segmented(make, q, k, v, mask_BxTmxS, structure, block_bytes, shard_batch, num_outputs=2)


def _check_masks(q, k, mask, structure):
  """(mask as (B, 1 or T, S), structure as a (T, S) numpy bool array or None), or a clear error."""
  b, t = q.shape[:2]
  s = k.shape[1]
  mask_BxTmxS = jnp.broadcast_to(mask, (b,) + mask.shape[-2:]) if mask.ndim == 3 else None
  if mask_BxTmxS is None or mask_BxTmxS.shape[1] not in (1, t) or mask_BxTmxS.shape[2] != s:
    raise ValueError(
      f"mask must broadcast to (B, T, S) = {(b, t, s)} with a query axis of 1 or "
      f"T, got {mask.shape}"
    )
  if isinstance(structure, StaticMask):
    structure = structure.array
  if structure is not None:
    structure = np.asarray(structure)
    if structure.shape != (t, s) or structure.dtype != np.bool_:
      raise ValueError(
        f"structure must be a static bool (T, S) = {(t, s)} array, got "
        f"{structure.dtype} {structure.shape}"
      )
  return mask_BxTmxS, structure


def _full_mask(mask_BxTmxS, structure):
  return mask_BxTmxS if structure is None else mask_BxTmxS & jnp.asarray(structure)[None]


@functools.lru_cache(maxsize=64)
def _segments_cached(
  extent_bytes: bytes, max_segments: int, min_saving: float
) -> tuple[tuple[int, int, int], ...]:
  """Dynamic programme over query runs; extent[i] = the keys query row i needs."""
  extent = np.frombuffer(extent_bytes, np.int64).astype(np.float64)
  t = extent.size
  rows = np.arange(t)
  reach = np.zeros((t, t))  # reach[i, j] = max(extent[i..j]), j >= i
  for i in range(t):
    reach[i, i:] = np.maximum.accumulate(extent[i:])
  run_cost = np.where(
    rows[None, :] >= rows[:, None], (rows[None, :] - rows[:, None] + 1) * reach, np.inf
  )  # rows i..j as one run
  costs = [run_cost[0]]  # costs[n][j]: rows 0..j in exactly n + 1 runs
  starts = [np.zeros(t, np.int64)]  # starts[n][j]: first row of the last of those runs
  for _ in range(1, min(max_segments, t)):
    cand = costs[-1][:-1, None] + run_cost[1:, :]  # last run starts at row i = 1..t-1
    first = np.argmin(cand, axis=0)
    costs.append(cand[first, rows])
    starts.append(first + 1)
  totals = [c[-1] for c in costs]
  n = next(n for n, c in enumerate(totals) if c <= min(totals) * (1.0 + min_saving))
  runs, stop = [], t
  for level in range(n, -1, -1):
    start = int(starts[level][stop - 1])
    runs.append((start, stop, int(reach[start, stop - 1])))
    stop = start
  return tuple(reversed(runs))


def query_segments(
  structure: np.ndarray | None, t: int, s: int, max_segments: int = 2, min_saving: float = 0.05
) -> tuple[tuple[int, int, int], ...]:
  """Contiguous query runs (start, stop, keys) for a static structure: queries [start, stop) only
  need keys [0, keys). Chosen to minimise the attended (query, key) pairs with at most
  `max_segments` runs, preferring fewer runs unless more save over `min_saving` of the work.
  Two runs by default: on LPN's pattern decoder (T = 205) two runs (75% of the pairs) took 0.93x
  the time of one run for the attention's forward and backward pass, three runs (69%) 0.97x, as
  each run adds its own loops and smaller blocks run less efficiently.
  """
  if structure is None:
    return ((0, t, s),)
  seen = structure.any(axis=1)
  # a row that sees no key outputs zeros whatever keys its run has: it has no say in the split
  extent = np.where(seen, s - np.argmax(structure[:, ::-1], axis=1), 1).astype(np.int64)
  return _segments_cached(extent.tobytes(), max_segments, min_saving)


def _segmented(make, q, k, v, mask_BxTmxS, structure, block_bytes, shard_batch, num_outputs):
  """Runs make(seqs, q_block, structure of the run) per query run of `query_segments` (on each
  device's sequences, `_per_device`) and concatenates the runs' outputs along the queries."""
  b, t, h, _ = q.shape
  s = k.shape[1]
  outs = []
  for start, stop, keys in query_segments(structure, t, s):
    m = mask_BxTmxS[:, start:stop] if mask_BxTmxS.shape[1] > 1 else mask_BxTmxS
    st = None if structure is None else structure[start:stop, :keys]
    if st is not None and st.all():
      st = None
    fn = _per_device(
      lambda seqs, q_block, st=st: make(seqs, q_block, st),
      (b, stop - start, keys, h),
      block_bytes,
      shard_batch,
      num_outputs,
    )
    outs.append(fn(q[:, start:stop], k[:, :keys], v[:, :keys], m[:, :, :keys]))
  if len(outs) == 1:
    return outs[0]
  if num_outputs == 1:
    return jnp.concatenate(outs, axis=1)
  return tuple(jnp.concatenate(parts, axis=1) for parts in zip(*outs))


def _per_device(
  make, btsh: tuple[int, int, int, int], block_bytes: int, shard_batch: bool, num_outputs: int
):
  """make(seqs, q_block) -> fn(q, k, v, mask) with block sizes for one device's batch, run in a
  shard_map over the batch axes when the current mesh shards them (and shard_batch is on).

  The block loops index the batch axis, which XLA's sharding propagation cannot split across
  devices: without the shard_map every device would run the loops over the whole global batch.
  """
  b, t, s, h = btsh
  shard_axes, shards = _batch_shards(b) if shard_batch else ((), 1)
  fn = make(*block_sizes(b // shards, t, s, h, block_bytes))
  if shards == 1:
    return fn
  spec = P(shard_axes)
  out_specs = spec if num_outputs == 1 else (spec,) * num_outputs
  return jax.shard_map(fn, in_specs=(spec,) * 4, out_specs=out_specs, check_vma=False)


def _batch_shards(b: int) -> tuple[tuple[str, ...], int]:
  """(mesh axes, device count) that shard the batch under the current mesh (`jax.set_mesh`), or
  ((), 1) without a mesh, with one device along the batch axes, or with b not divisible."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return (), 1
  # Every batch axis of the mesh, size 1 included: an axis left out of the specs would count as
  # unmapped, and the shard_map's transpose would all-reduce the gradients over it.
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  shards = int(np.prod([mesh.shape[a] for a in axes]))
  if shards == 1 or b % shards:
    return (), 1
  return axes, shards


def _resolve(implementation: str) -> str:
  """'blocked' or 'xla' for a configured implementation name; a clear error for others."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f"attention implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
    )
  if implementation == "auto":
    return "blocked" if jax.default_backend() == "cpu" else "xla"
  return implementation


def block_sizes(b: int, t: int, s: int, h: int, block_bytes: int) -> tuple[int, int]:
  """(sequences per block, queries per block) so that a block's float32 logits fit block_bytes.

  Sequences per block is the largest divisor of b that fits (no padding of the batch); queries are
  split only when one whole sequence does not fit.
  """
  per_query = h * s * 4
  q_block = int(min(t, max(1, block_bytes // per_query)))
  q_block = -(-t // -(-t // q_block))  # the same number of blocks, with the least padding
  per_seq = per_query * q_block
  seqs = max(1, min(b, block_bytes // per_seq))
  while b % seqs:
    seqs -= 1
  return seqs, q_block


def _xla_attention(q, k, v, mask_BxTmxS):
  """(output (B, T, H, D), row log-sum-exp (B, T, H)); XLA drops the second where it is unused."""
  scale = 1.0 / np.sqrt(q.shape[-1])
  logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask_BxTmxS[:, None], logits, _NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  live = jnp.any(mask_BxTmxS, axis=-1)[:, None, :, None]  # a fully masked row outputs zeros
  probs = jnp.where(live, probs, 0.0).astype(v.dtype)
  lse = jnp.swapaxes(jax.nn.logsumexp(logits, axis=-1), 1, 2)
  return jnp.einsum("bhts,bshd->bthd", probs, v), lse
