"""Scaled dot-product attention cores: the plain XLA form and a blocked, memory-efficient form.

Both compute softmax(q k^T / sqrt(D) masked) v with logits and softmax statistics in float32, for
q (B, T, H, D), k and v (B, S, H, D) and a boolean mask broadcastable to (B, T, S) (one mask shared
by all heads). Masked logits take the most negative finite float, so a fully masked row gives a
finite uniform average instead of NaN.

- `'xla'`: materialises the (B, H, T, S) logits and probabilities; the backward pass keeps them.
- `'blocked'`: the FlashAttention recipe (Dao et al., 2022) written in JAX: attention runs over
  blocks of (sequences, queries) whose (H, tq, S) logits fit in `block_bytes` (a cache-sized
  working set), the softmax uses exp2 with log2(e) folded into the scale, and a custom VJP saves only
  q, k, v, the output and the per-row softmax max and sum, recomputing probabilities block by block in the
  backward pass. Peak memory is O(B T H D + block) instead of O(B H T S), and on CPUs, where the
  (T, S) arrays of the plain form do not fit in cache, it is also faster (see bench/). The two agree
  to float32 rounding (tests/nn/test_attention.py). Reverse mode of any order works (JAX
  differentiates the custom rules themselves; LPN's Grad k ** needs it); forward mode (jax.jvp,
  jax.hessian) does not, as for every custom_vjp (under a batch-sharded mesh JAX's error message
  is less clear): use `'xla'` for that. Under a mesh that shards
  the batch (`jax.set_mesh`, axes `parallel.BATCH_AXES`), the blocked form runs in a shard_map so
  that each device loops over its own sequences: XLA's sharding propagation cannot split a loop
  over the batch axis, and without it every device ran the loops over the whole global batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxrepr import parallel

IMPLEMENTATIONS = ("auto", "blocked", "xla")
_LOG2E = float(np.log2(np.e))
_NEG = float(jnp.finfo(jnp.float32).min)


def dot_product_attention(q_BxTxHxD: jax.Array, k_BxSxHxD: jax.Array, v_BxSxHxD: jax.Array,
                          mask: jax.Array, implementation: str = "auto",
                          block_bytes: int = 2 ** 23, shard_batch: bool = True) -> jax.Array:
  """Multi-head attention output (B, T, H, D) in the dtype of v (see module docstring).

  `shard_batch=False` leaves the batch axis to XLA's sharding propagation instead of a shard_map:
  for calls under jax.vmap over a sharded axis (evaluation that maps over tasks), where the
  shard_map would reshard the inner batch instead.

  `'auto'` is `'blocked'` on CPU, where the plain form is bound by memory traffic, and `'xla'` on
  GPU/TPU, where the sequential block loops would leave the accelerator idle.
  """
  implementation = _resolve(implementation)
  b, t, h, d = q_BxTxHxD.shape
  s = k_BxSxHxD.shape[1]
  mask_BxTmxS = jnp.broadcast_to(mask, (b,) + mask.shape[-2:]) if mask.ndim == 3 else None
  if mask_BxTmxS is None or mask_BxTmxS.shape[1] not in (1, t) or mask_BxTmxS.shape[2] != s:
    raise ValueError(f"mask must broadcast to (B, T, S) = {(b, t, s)} with a query axis of 1 or "
                     f"T, got {mask.shape}")
  if implementation == "xla":
    return _xla_attention(q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, mask_BxTmxS)[0]
  blocked = _per_device(lambda seqs, q_block: functools.partial(_blocked, seqs=seqs,
                                                                q_block=q_block),
                        (b, t, s, h), block_bytes, shard_batch, num_outputs=1)
  return blocked(q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, mask_BxTmxS)


def attention_and_logsumexp(q_BxTxHxD: jax.Array, k_BxSxHxD: jax.Array, v_BxSxHxD: jax.Array,
                            mask: jax.Array, implementation: str = "auto",
                            block_bytes: int = 2 ** 23,
                            shard_batch: bool = True) -> tuple[jax.Array, jax.Array]:
  """(attention output (B, T, H, D), log-sum-exp of each row's masked logits (B, T, H), float32).

  For constants only: no gradient flows through it (the inputs are stop-gradient'd). With the
  log-sum-exp a row's softmax can be merged with keys added later (`transformer.Attention`'s
  one-token-gradient path). A fully masked row gives a log-sum-exp near the most negative float.
  """
  q, k, v = jax.lax.stop_gradient((q_BxTxHxD, k_BxSxHxD, v_BxSxHxD))
  implementation = _resolve(implementation)
  b, t, h, _ = q.shape
  s = k.shape[1]
  mask_BxTmxS = jnp.broadcast_to(mask, (b,) + mask.shape[-2:])
  if implementation == "xla":
    return _xla_attention(q, k, v, mask_BxTmxS)

  def make(seqs, q_block):
    def run(q, k, v, m):
      out, res = _blocked_fwd(q, k, v, m, seqs, q_block)
      mx, tot = res[-1]                                        # (nb, nq, c, H, tq), base 2
      lse2 = jnp.swapaxes(mx + jnp.log2(tot), 3, 4)            # (nb, nq, c, tq, H)
      return out, _merge(lse2, q.shape[1]) / _LOG2E
    return run
  return _per_device(make, (b, t, s, h), block_bytes, shard_batch, num_outputs=2)(
      q, k, v, mask_BxTmxS)


def _per_device(make, btsh: tuple[int, int, int, int], block_bytes: int, shard_batch: bool,
                num_outputs: int):
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
  axes = tuple(a for a in parallel.BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
  shards = int(np.prod([mesh.shape[a] for a in axes]))
  if shards == 1 or b % shards:
    return (), 1
  return axes, shards


def _resolve(implementation: str) -> str:
  """'blocked' or 'xla' for a configured implementation name; a clear error for others."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got "
                     f"{implementation!r}")
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
  q_block = -(-t // -(-t // q_block))     # the same number of blocks, with the least padding
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
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)    # uniform in a fully masked row
  lse = jnp.swapaxes(jax.nn.logsumexp(logits, axis=-1), 1, 2)
  return jnp.einsum("bhts,bshd->bthd", probs, v), lse


def _block_logits2(q_cxHxTqxD, k_cxHxSxD, m_cxTqxS, scale2):
  """Base-2 logits (c, H, tq, S) in float32, masked."""
  l2 = jnp.einsum("chtd,chsd->chts", q_cxHxTqxD, k_cxHxSxD,
                  preferred_element_type=jnp.float32) * scale2
  return jnp.where(m_cxTqxS[:, None], l2, _NEG)


def _split(x_BxTx, seqs: int, q_block: int, nq: int):
  """(B, T, ...) -> (B / seqs, nq, seqs, q_block, ...), padding T to nq * q_block."""
  b, t = x_BxTx.shape[:2]
  pad = nq * q_block - t
  if pad:
    x_BxTx = jnp.pad(x_BxTx, [(0, 0), (0, pad)] + [(0, 0)] * (x_BxTx.ndim - 2))
  x = x_BxTx.reshape((b // seqs, seqs, nq, q_block) + x_BxTx.shape[2:])
  return jnp.swapaxes(x, 1, 2)


def _merge(x, t: int):
  """Inverse of `_split`: (B / seqs, nq, seqs, q_block, ...) -> (B, T, ...)."""
  nb, nq, seqs, q_block = x.shape[:4]
  x = jnp.swapaxes(x, 1, 2).reshape((nb * seqs, nq * q_block) + x.shape[4:])
  return x[:, :t]


def _chunks(q, k, v, mask, seqs, q_block):
  """Blocked views: q (nb, nq, c, tq, H, D) -> heads-first later; k, v (nb, c, S, H, D);
  mask (nb, nq, c, tq, S) or (nb, 1, c, 1, S) when shared by all queries."""
  b, t = q.shape[:2]
  nq = -(-t // q_block)
  qb = _split(q, seqs, q_block, nq)
  kb = k.reshape((b // seqs, seqs) + k.shape[1:])
  vb = v.reshape((b // seqs, seqs) + v.shape[1:])
  if mask.shape[1] == 1:
    mb = mask.reshape(b // seqs, 1, seqs, 1, mask.shape[2])
  else:
    mb = _split(mask, seqs, q_block, nq)
  return qb, kb, vb, mb, nq


def _heads_first(x_cxTxHxD):
  return jnp.swapaxes(x_cxTxHxD, 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _blocked(q, k, v, mask, seqs, q_block):
  return _blocked_fwd(q, k, v, mask, seqs, q_block)[0]


def _blocked_fwd(q, k, v, mask, seqs, q_block):
  t, d = q.shape[1], q.shape[-1]
  scale2 = _LOG2E / np.sqrt(d)
  qb, kb, vb, mb, nq = _chunks(q, k, v, mask, seqs, q_block)

  def seq_block(args):
    q_nqxcxTqxHxD, k_cxSxHxD, v_cxSxHxD, m_nqxcxTqxS = args
    kh, vh = _heads_first(k_cxSxHxD), _heads_first(v_cxSxHxD)

    def query_block(args):
      q_cxTqxHxD, m_cxTqxS = args
      l2 = _block_logits2(_heads_first(q_cxTqxHxD), kh, m_cxTqxS, scale2)
      mx = jnp.max(l2, axis=-1, keepdims=True)
      e = jnp.exp2(l2 - mx)
      tot = jnp.sum(e, axis=-1, keepdims=True)
      o = jnp.einsum("chts,chsd->chtd", e.astype(v.dtype), vh,
                     preferred_element_type=jnp.float32) / tot
      return _heads_first(o).astype(v.dtype), (mx[..., 0], tot[..., 0])

    m_all = jnp.broadcast_to(m_nqxcxTqxS, (nq,) + m_nqxcxTqxS.shape[1:])
    return jax.lax.map(query_block, (q_nqxcxTqxHxD, m_all))

  o_blocks, stats_blocks = jax.lax.map(seq_block, (qb, kb, vb, mb))
  out = _merge(o_blocks, t)
  return out, (q, k, v, mask, out, stats_blocks)


def _blocked_bwd(seqs, q_block, res, dout):
  q, k, v, mask, out, stats_blocks = res
  t, d = q.shape[1], q.shape[-1]
  scale = 1.0 / np.sqrt(d)
  scale2 = _LOG2E * scale
  qb, kb, vb, mb, nq = _chunks(q, k, v, mask, seqs, q_block)
  ob = _split(out, seqs, q_block, nq)
  dob = _split(dout, seqs, q_block, nq)

  def seq_block(args):
    q_nq, k_cxSxHxD, v_cxSxHxD, m_nq, o_nq, do_nq, stats_nq = args
    kh, vh = _heads_first(k_cxSxHxD), _heads_first(v_cxSxHxD)
    m_all = jnp.broadcast_to(m_nq, (nq,) + m_nq.shape[1:])

    def query_block(carry, args):
      dk_acc, dv_acc = carry
      q_c, m_c, o_c, do_c, (mx_c, tot_c) = args
      qh, oh, doh = _heads_first(q_c), _heads_first(o_c), _heads_first(do_c)
      # Keys-major (S, tq) layout: the two accumulations over queries (dk, dv) then contract the
      # minor axis. The forward pass's max and sum are reused (one log-sum-exp would lose a fully
      # masked row, whose max is the most negative float).
      m_t = jnp.swapaxes(m_c, 1, 2)[:, None]                              # (c, 1, S, tq or 1)
      l2_t = jnp.einsum("chsd,chtd->chst", kh, qh, preferred_element_type=jnp.float32) * scale2
      l2_t = jnp.where(m_t, l2_t, _NEG)
      p_t = jnp.exp2(l2_t - mx_c[:, :, None, :]) * (1.0 / tot_c)[:, :, None, :]
      dv_acc = dv_acc + jnp.einsum("chst,chtd->chsd", p_t.astype(doh.dtype), doh,
                                   preferred_element_type=jnp.float32)
      dp_t = jnp.einsum("chsd,chtd->chst", vh, doh, preferred_element_type=jnp.float32)
      delta = jnp.sum(doh.astype(jnp.float32) * oh.astype(jnp.float32), axis=-1)
      # Masked logits are constants: no gradient reaches q or k through them (this matters only in
      # a fully masked row, where p is uniform rather than zero at masked keys).
      ds_t = jnp.where(m_t, p_t * (dp_t - delta[:, :, None, :]), 0.0).astype(qh.dtype)
      # dq^T = k^T ds_t keeps both operands in layouts that XLA's CPU dot library takes directly;
      # written as ds_t^T k (which XLA folds the transpose back into, without the barrier) it falls
      # back to a generic dot 2.4x slower (90 against 38 ms a layer for LPN's pattern batch).
      dq_t = jnp.einsum("chsd,chst->chdt", kh, ds_t, preferred_element_type=jnp.float32)
      dq = jnp.swapaxes(jax.lax.optimization_barrier(dq_t), 2, 3) * scale
      dk_acc = dk_acc + jnp.einsum("chst,chtd->chsd", ds_t, qh,
                                   preferred_element_type=jnp.float32) * scale
      return (dk_acc, dv_acc), _heads_first(dq).astype(q.dtype)

    zeros = jnp.zeros(kh.shape, jnp.float32)
    (dk, dv), dq_nq = jax.lax.scan(query_block, (zeros, zeros),
                                   (q_nq, m_all, o_nq, do_nq, stats_nq))
    return dq_nq, _heads_first(dk).astype(k.dtype), _heads_first(dv).astype(v.dtype)

  dq_blocks, dk_blocks, dv_blocks = jax.lax.map(seq_block,
                                                (qb, kb, vb, mb, ob, dob, stats_blocks))
  dq = _merge(dq_blocks, t)
  dk = dk_blocks.reshape(k.shape)
  dv = dv_blocks.reshape(v.shape)
  return dq, dk, dv, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
