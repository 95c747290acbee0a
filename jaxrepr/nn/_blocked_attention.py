"""The blocked (FlashAttention-style) attention kernel behind jaxrepr/nn/attention.py's
`'blocked'` implementation: per (sequences, queries) block, base-2 logits against every visible
key, a custom VJP that saves only q, k, v, the output and the per-row softmax max and sum, and
recomputes the probabilities block by block in the backward pass. `StaticMask` carries a static
(T, S) structure through module calls, jax.checkpoint's static arguments and the custom VJP.
The recipe and its invariants are described in attention.py's module docstring.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_LOG2E = float(np.log2(np.e))
_NEG = float(jnp.finfo(jnp.float32).min)


def _block_logits2(q_cxHxTqxD, k_cxHxSxD, m_cxTqxS, scale2):
  """Base-2 logits (c, H, tq, S) in float32, masked."""
  l2 = (
    jnp.einsum("chtd,chsd->chts", q_cxHxTqxD, k_cxHxSxD, preferred_element_type=jnp.float32)
    * scale2
  )
  return jnp.where(m_cxTqxS[:, None], l2, _NEG)


class StaticMask:
  """A static bool (T, S) structure mask (numpy), hashable: what passes a structure through
  module calls, jax.checkpoint's static arguments and the custom VJP. `array` may be None."""

  def __init__(self, array: np.ndarray | None):
    self.array = None if array is None else np.asarray(array, bool)
    self._key = None if self.array is None else (self.array.shape, self.array.tobytes())

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, StaticMask) and self._key == other._key

  def blocks(self, q_block: int, nq: int, keys_major: bool = False) -> jax.Array | None:
    """(nq, q_block, S) rows of the structure per query block (padding rows see every key), or
    (nq, S, q_block) with `keys_major`: transposed here, on the constant, so that no loop body
    transposes a mask."""
    if self.array is None:
      return None
    t, s = self.array.shape
    rows = np.ones((nq * q_block, s), bool)
    rows[:t] = self.array
    rows = rows.reshape(nq, q_block, s)
    return jnp.asarray(np.ascontiguousarray(np.swapaxes(rows, 1, 2)) if keys_major else rows)


def _inverse_total(mx, tot):
  """1 / (softmax sum), or 0 for a fully masked row (whose max is the most negative float): such
  a row outputs zeros."""
  return jnp.where(mx == _NEG, 0.0, 1.0 / tot)


def _with_structure(m_cxTqxS, st_TqxS):
  """A block's mask (c, tq or 1, S) ANDed with its rows of the static structure (tq, S)."""
  return m_cxTqxS if st_TqxS is None else m_cxTqxS & st_TqxS[None]


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _blocked(q, k, v, mask, structure, seqs, q_block):
  return _blocked_fwd(q, k, v, mask, structure, seqs, q_block)[0]


def _blocked_fwd(q, k, v, mask, structure, seqs, q_block):
  t, d = q.shape[1], q.shape[-1]
  scale2 = _LOG2E / np.sqrt(d)
  qb, kb, vb, mb, nq = _chunks(q, k, v, mask, seqs, q_block)
  st_blocks = structure.blocks(q_block, nq)

  def seq_block(args):
    q_nqxcxTqxHxD, k_cxSxHxD, v_cxSxHxD, m_nqxcxTqxS = args
    kh, vh = _heads_first(k_cxSxHxD), _heads_first(v_cxSxHxD)

    def query_block(args):
      q_cxTqxHxD, m_cxTqxS, st_TqxS = args
      l2 = _block_logits2(_heads_first(q_cxTqxHxD), kh, _with_structure(m_cxTqxS, st_TqxS), scale2)
      mx = jnp.max(l2, axis=-1, keepdims=True)
      e = jnp.exp2(l2 - mx)
      tot = jnp.sum(e, axis=-1, keepdims=True)
      o = jnp.einsum(
        "chts,chsd->chtd", e.astype(v.dtype), vh, preferred_element_type=jnp.float32
      ) * _inverse_total(mx, tot)
      return _heads_first(o).astype(v.dtype), (mx[..., 0], tot[..., 0])

    m_all = jnp.broadcast_to(m_nqxcxTqxS, (nq,) + m_nqxcxTqxS.shape[1:])
    return jax.lax.map(query_block, (q_nqxcxTqxHxD, m_all, st_blocks))

  o_blocks, stats_blocks = jax.lax.map(seq_block, (qb, kb, vb, mb))
  out = _merge(o_blocks, t)
  return out, (q, k, v, mask, out, stats_blocks)


def _blocked_bwd(structure, seqs, q_block, res, dout):
  q, k, v, mask, out, stats_blocks = res
  t, d = q.shape[1], q.shape[-1]
  scale = 1.0 / np.sqrt(d)
  scale2 = _LOG2E * scale
  qb, kb, vb, mb, nq = _chunks(q, k, v, mask, seqs, q_block)
  st_blocks = structure.blocks(q_block, nq, keys_major=True)
  ob = _split(out, seqs, q_block, nq)
  dob = _split(dout, seqs, q_block, nq)

  def seq_block(args):
    q_nq, k_cxSxHxD, v_cxSxHxD, m_nq, o_nq, do_nq, stats_nq = args
    kh, vh = _heads_first(k_cxSxHxD), _heads_first(v_cxSxHxD)
    m_all = jnp.broadcast_to(m_nq, (nq,) + m_nq.shape[1:])

    def query_block(carry, args):
      dk_acc, dv_acc = carry
      q_c, m_c, o_c, do_c, (mx_c, tot_c), st_t = args
      qh, oh, doh = _heads_first(q_c), _heads_first(o_c), _heads_first(do_c)
      # Keys-major (S, tq) layout: the two accumulations over queries (dk, dv) then contract the
      # minor axis. The forward pass's max and sum are reused (one log-sum-exp would lose a fully
      # masked row, whose max is the most negative float).
      m_t = jnp.swapaxes(m_c, 1, 2)[:, None]  # (c, 1, S, tq or 1)
      if st_t is not None:
        m_t = m_t & st_t[None, None]
      l2_t = jnp.einsum("chsd,chtd->chst", kh, qh, preferred_element_type=jnp.float32) * scale2
      l2_t = jnp.where(m_t, l2_t, _NEG)
      # p is zero at every masked key, also in a fully masked row (zeroed through its normaliser
      # as in the forward pass): ds = p (dp - delta) then needs no mask of its own, and no
      # gradient reaches q or k through masked logits, which are constants.
      p_t = jnp.exp2(l2_t - mx_c[:, :, None, :]) * _inverse_total(mx_c, tot_c)[:, :, None, :]
      dv_acc = dv_acc + jnp.einsum(
        "chst,chtd->chsd", p_t.astype(doh.dtype), doh, preferred_element_type=jnp.float32
      )
      dp_t = jnp.einsum("chsd,chtd->chst", vh, doh, preferred_element_type=jnp.float32)
      delta = jnp.sum(doh.astype(jnp.float32) * oh.astype(jnp.float32), axis=-1)
      ds_t = (p_t * (dp_t - delta[:, :, None, :])).astype(qh.dtype)
      # dq^T = k^T ds_t keeps both operands in layouts that XLA's CPU dot library takes directly;
      # written as ds_t^T k (which XLA folds the transpose back into, without the barrier) it falls
      # back to a generic dot 2.4x slower (90 against 38 ms a layer for LPN's pattern batch).
      dq_t = jnp.einsum("chsd,chst->chdt", kh, ds_t, preferred_element_type=jnp.float32)
      dq = jnp.swapaxes(jax.lax.optimization_barrier(dq_t), 2, 3) * scale
      dk_acc = (
        dk_acc + jnp.einsum("chst,chtd->chsd", ds_t, qh, preferred_element_type=jnp.float32) * scale
      )
      return (dk_acc, dv_acc), _heads_first(dq).astype(q.dtype)

    zeros = jnp.zeros(kh.shape, jnp.float32)
    (dk, dv), dq_nq = jax.lax.scan(
      query_block, (zeros, zeros), (q_nq, m_all, o_nq, do_nq, stats_nq, st_blocks)
    )
    return dq_nq, _heads_first(dk).astype(k.dtype), _heads_first(dv).astype(v.dtype)

  dq_blocks, dk_blocks, dv_blocks = jax.lax.map(seq_block, (qb, kb, vb, mb, ob, dob, stats_blocks))
  dq = _merge(dq_blocks, t)
  dk = dk_blocks.reshape(k.shape)
  dv = dv_blocks.reshape(v.shape)
  return dq, dk, dv, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
