"""Pre-LN transformer pieces in Flax Linen, generic over what the tokens mean.

- `layer_norm`: LayerNorm without scale or bias (no parameters), computed in float32.
- `Attention`: multi-head attention without biases. The caller passes an explicit boolean mask
  broadcastable to (B, T, S) (one mask shared by all heads, so no per-head T x S mask is built);
  logits and softmax are in float32, the value product in the compute dtype. The core is
  `attention.dot_product_attention`: `'blocked'` (memory-efficient, recomputes the probabilities
  block by block in the backward pass), `'xla'` (the plain form) or `'auto'` (the default:
  blocked on CPU, xla on GPU/TPU).
- Optional 2-D rotary position embedding (`rope_angles`): half of each head's dimensions rotate with
  the row coordinate, half with the column coordinate.
- Optional key/value cache: an explicit pytree `{'k', 'v'}` of shape (B, S, H, D) per layer that the
  caller owns; a call with `cache` and `index` writes the new keys/values at `index` and attends
  over the whole cache, so a token costs one token's forward pass during incremental decoding.

Masked logits use the most negative finite float and a fully masked row outputs zeros instead of
NaN; callers mask keys only, which leaves every valid token's output unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr.nn import attention as attention_lib

Cache = dict[str, jax.Array]


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last axis without learned scale or bias; statistics in float32."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def rope_frequencies(head_dim: int, max_freq: float) -> np.ndarray:
  """Frequencies of the 2-D RoPE, (head_dim // 4,).

  "Pixel" convention (as in rotary-embedding-torch with freqs_for='pixel'): linearly spaced from 1
  to max_freq / 2, times pi, applied to coordinates normalised to about [0, 1] by the caller. The
  paper (Table 16, App. G) only states "row and column indices, max frequency 10"; this is our
  reading.
  """
  if head_dim % 4:
    raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
  return np.linspace(1.0, max_freq / 2.0, head_dim // 4) * np.pi


def rope_angles(coords_BxTx2: jax.Array, head_dim: int, max_freq: float) -> jax.Array:
  """Rotation angles (B, T, head_dim // 2) for normalised (row, col) coordinates (B, T, 2)."""
  freqs_F = jnp.asarray(rope_frequencies(head_dim, max_freq), jnp.float32)
  coords = coords_BxTx2.astype(jnp.float32)
  row_BxTxF = coords[..., 0:1] * freqs_F[None, None, :]
  col_BxTxF = coords[..., 1:2] * freqs_F[None, None, :]
  return jnp.concatenate([row_BxTxF, col_BxTxF], axis=-1)


def apply_rope(x_BxTxHxD: jax.Array, angles_BxTxK: jax.Array) -> jax.Array:
  """Rotates pairs (x[..., :D/2], x[..., D/2:]) by the given angles (K = D / 2)."""
  half = x_BxTxHxD.shape[-1] // 2
  x32 = x_BxTxHxD.astype(jnp.float32)
  x1, x2 = x32[..., :half], x32[..., half:]
  cos = jnp.cos(angles_BxTxK)[:, :, None, :]
  sin = jnp.sin(angles_BxTxK)[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.astype(x_BxTxHxD.dtype)


def one_token_gradient_attention(
  projections,
  x_BxTxE,
  mask,
  angles_BxTxK,
  c: int,
  implementation: str,
  shard_batch: bool = True,
  structure: attention_lib.StaticMask | None = None,
  x_rest_BxTxE: jax.Array | None = None,
) -> jax.Array:
  """Attention (before the output projection) whose only differentiable input is token c's.

  Same values as the plain path. For a gradient w.r.t. something that enters the sequence only
  through token c (LPN's latent, through the decoder's ctx token, at the first layer): the other
  tokens' inputs are constants, so the attention of every query over the keys other than c is a
  constant too (computed once, with its log-sum-exp, no backward pass), and only key c's logit and
  value, and query c's own row, carry the gradient. This replaces the first layer's full (T x S)
  attention backward by O(T) work. Gradients w.r.t. anything else (the parameters, other tokens)
  are not those of the plain path: use it only where they are not wanted. Assumes every query row
  sees at least one key other than c (true of LPN's decoder, whose shape tokens are always valid).
  `structure`: the static (T, S) mask of `attention.dot_product_attention`, ANDed with `mask`.
  `x_rest_BxTxE`: the same input with token c's row replaced by anything that does not depend on
  what token c carries (LPN: the ctx of a zero latent). The constants are then computed from it, so
  that they are literally independent of token c: passes of a search in one program (LPN's
  training-time Grad k: the gradient passes and the final score of a LOO position) share one
  computation of them (XLA's common-subexpression elimination; checked in the compiled step).
  """
  q_proj, k_proj, v_proj = projections
  x_const = jax.lax.stop_gradient(x_BxTxE if x_rest_BxTxE is None else x_rest_BxTxE)
  q, k, v = q_proj(x_const), k_proj(x_const), v_proj(x_const)  # (B, T, H, D) constants
  x_c = x_BxTxE[:, c : c + 1]
  q_c, k_c, v_c = q_proj(x_c), k_proj(x_c), v_proj(x_c)  # (B, 1, H, D)
  if angles_BxTxK is not None:
    q, k = apply_rope(q, angles_BxTxK), apply_rope(k, angles_BxTxK)
    q_c, k_c = (
      apply_rope(q_c, angles_BxTxK[:, c : c + 1]),
      apply_rope(k_c, angles_BxTxK[:, c : c + 1]),
    )
  b, t, _, d = q.shape
  s = k.shape[1]
  mask_BxTmxS = jnp.broadcast_to(mask, (b,) + mask.shape[-2:])
  st_TxS = (
    np.ones((t, s), bool) if structure is None or structure.array is None else (structure.array)
  )
  others = np.arange(s) != c
  out_rest, lse_rest_BxTxH = attention_lib.attention_and_logsumexp(
    q,
    k,
    v,
    mask_BxTmxS,
    implementation,
    shard_batch=shard_batch,
    structure=st_TxS & others[None, :],
  )
  scale = 1.0 / np.sqrt(d)
  logit_c = (
    jnp.einsum("bthd,bhd->bth", q.astype(jnp.float32), k_c[:, 0].astype(jnp.float32)) * scale
  )
  sees_c = jnp.broadcast_to(mask_BxTmxS[:, :, c], (b, t)) & st_TxS[None, :, c]
  logit_c = jnp.where(sees_c[:, :, None], logit_c, attention_lib._NEG)
  lse = jnp.logaddexp(lse_rest_BxTxH, logit_c)
  out = jnp.exp(lse_rest_BxTxH - lse)[..., None] * out_rest.astype(jnp.float32) + jnp.exp(
    logit_c - lse
  )[..., None] * v_c.astype(jnp.float32)
  # Query c's own row: its query changes too, so it attends afresh over all keys (one row).
  k_all = k.at[:, c].set(k_c[:, 0])
  v_all = v.at[:, c].set(v_c[:, 0])
  row_mask = mask_BxTmxS[:, c if mask_BxTmxS.shape[1] > 1 else 0] & st_TxS[None, c]
  out_c = attention_lib.dot_product_attention(q_c, k_all, v_all, row_mask[:, None, :], "xla")
  out = out.at[:, c].set(out_c[:, 0].astype(jnp.float32))
  return out.astype(v.dtype)


class Attention(nn.Module):
  """Multi-head attention without biases; explicit mask; optional RoPE and key/value cache."""

  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  implementation: str = "auto"
  shard_batch: bool = True  # see attention.dot_product_attention

  @nn.compact
  def __call__(
    self,
    x_BxTxE: jax.Array,
    mask_BxTxS: jax.Array,
    angles_BxTxK: jax.Array | None = None,
    cache: Cache | None = None,
    index: jax.Array | None = None,
    grad_token: int | None = None,
    structure: attention_lib.StaticMask | None = None,
    queries: tuple[int, int] | None = None,
    x_rest_BxTxE: jax.Array | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """`grad_token`: see `one_token_gradient_attention` (only without a cache). `structure`: a
    static (T, S) mask ANDed with `mask_BxTxS` (see `attention.dot_product_attention`).
    `queries`: a static (start, stop): only tokens start..stop-1 query (all T tokens remain keys
    and values); the output is theirs, (B, stop - start, E). `x_rest_BxTxE`: see
    `one_token_gradient_attention` (with grad_token only)."""
    e = x_BxTxE.shape[-1]
    dense = lambda name: nn.DenseGeneral(
      (self.num_heads, self.head_dim), use_bias=False, dtype=self.dtype, name=name
    )
    projections = dense("query"), dense("key"), dense("value")
    out_proj = nn.DenseGeneral(e, axis=(-2, -1), use_bias=False, dtype=self.dtype, name="out")
    if queries is not None and (cache is not None or grad_token is not None):
      raise ValueError("queries is for teacher-forced calls without grad_token or a cache")
    if grad_token is not None:
      if cache is not None:
        raise ValueError("grad_token is for teacher-forced calls, not with a key/value cache")
      return out_proj(
        one_token_gradient_attention(
          projections,
          x_BxTxE,
          mask_BxTxS,
          angles_BxTxK,
          grad_token,
          self.implementation,
          self.shard_batch,
          structure,
          x_rest_BxTxE,
        )
      ), None
    k_BxTxHxD, v_BxTxHxD = projections[1](x_BxTxE), projections[2](x_BxTxE)
    angles_q = angles_BxTxK
    if queries is not None:
      start, stop = queries
      x_BxTxE = x_BxTxE[:, start:stop]
      angles_q = None if angles_BxTxK is None else angles_BxTxK[:, start:stop]
      if mask_BxTxS.shape[-2] > 1:
        mask_BxTxS = mask_BxTxS[..., start:stop, :]
      if structure is not None and structure.array is not None:
        structure = attention_lib.StaticMask(structure.array[start:stop])
    q_BxTxHxD = projections[0](x_BxTxE)
    if angles_BxTxK is not None:
      q_BxTxHxD = apply_rope(q_BxTxHxD, angles_q)
      k_BxTxHxD = apply_rope(k_BxTxHxD, angles_BxTxK)
    new_cache = None
    if cache is not None:
      if index is None:
        raise ValueError("a key/value cache needs the write index")
      zero = jnp.zeros((), jnp.int32)
      start = (zero, jnp.asarray(index, jnp.int32), zero, zero)
      k_BxSxHxD = jax.lax.dynamic_update_slice(
        cache["k"], k_BxTxHxD.astype(cache["k"].dtype), start
      )
      v_BxSxHxD = jax.lax.dynamic_update_slice(
        cache["v"], v_BxTxHxD.astype(cache["v"].dtype), start
      )
      new_cache = {"k": k_BxSxHxD, "v": v_BxSxHxD}
    else:
      k_BxSxHxD, v_BxSxHxD = k_BxTxHxD, v_BxTxHxD
    out_BxTxHxD = attention_lib.dot_product_attention(
      q_BxTxHxD,
      k_BxSxHxD.astype(self.dtype),
      v_BxSxHxD.astype(self.dtype),
      mask_BxTxS,
      self.implementation,
      shard_batch=self.shard_batch,
      structure=structure,
    )
    out_BxTxE = out_proj(out_BxTxHxD)
    return out_BxTxE, new_cache


class Mlp(nn.Module):
  """Dense(mlp_factor * E) -> SiLU -> Dense(E), no biases."""

  mlp_factor: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxE: jax.Array) -> jax.Array:
    e = x_BxTxE.shape[-1]
    h = nn.Dense(self.mlp_factor * e, use_bias=False, dtype=self.dtype, name="up")(x_BxTxE)
    return nn.Dense(e, use_bias=False, dtype=self.dtype, name="down")(nn.silu(h))


class Block(nn.Module):
  """Pre-LN block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  head_dim: int
  mlp_factor: int
  dtype: Any = jnp.float32
  attention: str = "auto"
  shard_batch: bool = True

  @nn.compact
  def __call__(
    self,
    x_BxTxE,
    mask_BxTxS,
    angles_BxTxK=None,
    cache=None,
    index=None,
    grad_token=None,
    structure=None,
    queries=None,
    x_rest_BxTxE=None,
  ):
    """`queries`: (start, stop) of the tokens whose outputs are computed (see `Attention`).
    `x_rest_BxTxE`: with grad_token, see `one_token_gradient_attention`."""
    h, new_cache = Attention(
      self.num_heads, self.head_dim, self.dtype, self.attention, self.shard_batch, name="attn"
    )(
      layer_norm(x_BxTxE),
      mask_BxTxS,
      angles_BxTxK,
      cache,
      index,
      grad_token,
      structure,
      queries,
      None if x_rest_BxTxE is None else layer_norm(x_rest_BxTxE),
    )
    if queries is not None:
      x_BxTxE = x_BxTxE[:, queries[0] : queries[1]]
    x_BxTxE = x_BxTxE + h
    x_BxTxE = x_BxTxE + Mlp(self.mlp_factor, self.dtype, name="mlp")(layer_norm(x_BxTxE))
    return x_BxTxE, new_cache


class Transformer(nn.Module):
  """A stack of pre-LN blocks (no final LayerNorm: heads normalise their own input).

  `cache` is a list with one `{'k', 'v'}` per layer (see `init_cache`) or None. `remat` recomputes
  each block's activations in the backward pass (less memory, about a third more compute).
  """

  num_layers: int
  num_heads: int
  head_dim: int
  mlp_factor: int
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "auto"
  shard_batch: bool = True

  @nn.compact
  def __call__(
    self,
    x_BxTxE,
    mask_BxTxS,
    angles_BxTxK=None,
    cache=None,
    index=None,
    grad_token=None,
    structure: attention_lib.StaticMask | None = None,
    outputs: tuple[int, int] | None = None,
    x_rest_BxTxE: jax.Array | None = None,
  ):
    """`grad_token`: gradients are wanted only w.r.t. what enters through this token's input;
    the first layer then uses `one_token_gradient_attention` (not under remat: it has no
    (T x S) backward to save memory on). `structure`: a static (T, S) mask shared by all
    sequences and ANDed with `mask_BxTxS` (`attention.StaticMask`; the blocked attention skips
    the keys a run of queries cannot see). `outputs`: a static (start, stop): only those tokens'
    outputs are wanted, (B, stop - start, E); the last layer then computes only their queries,
    attention rows and MLP (every token stays a key and value), the same values for less work.
    `x_rest_BxTxE`: with grad_token, the input with that token's row replaced by something
    independent of it (`one_token_gradient_attention`)."""
    if outputs is not None and cache is not None:
      raise ValueError("outputs is for teacher-forced calls, not with a key/value cache")
    if outputs is not None and not 0 <= outputs[0] < outputs[1] <= x_BxTxE.shape[1]:
      raise ValueError(
        f"outputs must be (start, stop) with 0 <= start < stop <= T = "
        f"{x_BxTxE.shape[1]}, got {outputs}"
      )
    if structure is not None and not isinstance(structure, attention_lib.StaticMask):
      structure = attention_lib.StaticMask(structure)
    # structure and queries are static arguments of the checkpointed block (7 and 8, with self)
    block_cls = nn.remat(Block, static_argnums=(7, 8)) if (self.remat and cache is None) else Block
    new_cache = []
    last = self.num_layers - 1
    for layer in range(self.num_layers):
      first_grad = grad_token if layer == 0 else None
      cls = Block if first_grad is not None else block_cls
      queries = outputs if (layer == last and first_grad is None) else None
      x_BxTxE, layer_cache = cls(
        self.num_heads,
        self.head_dim,
        self.mlp_factor,
        self.dtype,
        self.attention,
        self.shard_batch,
        name=f"block_{layer}",
      )(
        x_BxTxE,
        mask_BxTxS,
        angles_BxTxK,
        None if cache is None else cache[layer],
        index,
        first_grad,
        structure,
        queries,
        x_rest_BxTxE if first_grad is not None else None,
      )
      new_cache.append(layer_cache)
    if outputs is not None and x_BxTxE.shape[1] != outputs[1] - outputs[0]:
      x_BxTxE = x_BxTxE[:, outputs[0] : outputs[1]]  # one layer that also took grad_token
    return x_BxTxE, (new_cache if cache is not None else None)


def init_cache(
  num_layers: int, batch: int, length: int, num_heads: int, head_dim: int, dtype: Any = jnp.float32
) -> list[Cache]:
  """An empty key/value cache for `Transformer` (zeros; unwritten slots must be masked)."""
  zeros = lambda: jnp.zeros((batch, length, num_heads, head_dim), dtype)
  return [{"k": zeros(), "v": zeros()} for _ in range(num_layers)]
