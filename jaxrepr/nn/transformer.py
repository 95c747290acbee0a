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
  caller owns; a call with `cache` and `index` writes the new keys/values at `index` and attends over
  the whole cache, so a token costs one token's forward pass during incremental decoding.

Masked logits use the most negative finite float, so a fully masked row gives a finite (uniform)
attention instead of NaN; callers mask keys only, which leaves every valid token's output unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

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

  "Pixel" convention (as in rotary-embedding-torch with freqs_for='pixel'): linearly spaced from 1 to
  max_freq / 2, times pi, applied to coordinates normalised to about [0, 1] by the caller. The paper
  (Table 16, App. G) only states "row and column indices, max frequency 10"; this is our reading.
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


class Attention(nn.Module):
  """Multi-head attention without biases; explicit mask; optional RoPE and key/value cache."""

  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x_BxTxE: jax.Array, mask_BxTxS: jax.Array,
               angles_BxTxK: Optional[jax.Array] = None, cache: Optional[Cache] = None,
               index: Optional[jax.Array] = None) -> tuple[jax.Array, Optional[Cache]]:
    e = x_BxTxE.shape[-1]
    dense = lambda name: nn.DenseGeneral((self.num_heads, self.head_dim), use_bias=False,
                                         dtype=self.dtype, name=name)
    q_BxTxHxD = dense("query")(x_BxTxE)
    k_BxTxHxD = dense("key")(x_BxTxE)
    v_BxTxHxD = dense("value")(x_BxTxE)
    if angles_BxTxK is not None:
      q_BxTxHxD = apply_rope(q_BxTxHxD, angles_BxTxK)
      k_BxTxHxD = apply_rope(k_BxTxHxD, angles_BxTxK)
    new_cache = None
    if cache is not None:
      if index is None:
        raise ValueError("a key/value cache needs the write index")
      zero = jnp.zeros((), jnp.int32)
      start = (zero, jnp.asarray(index, jnp.int32), zero, zero)
      k_BxSxHxD = jax.lax.dynamic_update_slice(cache["k"], k_BxTxHxD.astype(cache["k"].dtype), start)
      v_BxSxHxD = jax.lax.dynamic_update_slice(cache["v"], v_BxTxHxD.astype(cache["v"].dtype), start)
      new_cache = {"k": k_BxSxHxD, "v": v_BxSxHxD}
    else:
      k_BxSxHxD, v_BxSxHxD = k_BxTxHxD, v_BxTxHxD
    out_BxTxHxD = attention_lib.dot_product_attention(
        q_BxTxHxD, k_BxSxHxD.astype(self.dtype), v_BxSxHxD.astype(self.dtype), mask_BxTxS,
        self.implementation)
    out_BxTxE = nn.DenseGeneral(e, axis=(-2, -1), use_bias=False, dtype=self.dtype,
                                name="out")(out_BxTxHxD)
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

  @nn.compact
  def __call__(self, x_BxTxE, mask_BxTxS, angles_BxTxK=None, cache=None, index=None):
    h, new_cache = Attention(self.num_heads, self.head_dim, self.dtype, self.attention,
                             name="attn")(
        layer_norm(x_BxTxE), mask_BxTxS, angles_BxTxK, cache, index)
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

  @nn.compact
  def __call__(self, x_BxTxE, mask_BxTxS, angles_BxTxK=None, cache=None, index=None):
    block_cls = nn.remat(Block) if (self.remat and cache is None) else Block
    new_cache = []
    for layer in range(self.num_layers):
      x_BxTxE, layer_cache = block_cls(self.num_heads, self.head_dim, self.mlp_factor, self.dtype,
                                       self.attention, name=f"block_{layer}")(
          x_BxTxE, mask_BxTxS, angles_BxTxK, None if cache is None else cache[layer], index)
      new_cache.append(layer_cache)
    return x_BxTxE, (new_cache if cache is not None else None)


def init_cache(num_layers: int, batch: int, length: int, num_heads: int, head_dim: int,
               dtype: Any = jnp.float32) -> list[Cache]:
  """An empty key/value cache for `Transformer` (zeros; unwritten slots must be masked)."""
  zeros = lambda: jnp.zeros((batch, length, num_heads, head_dim), dtype)
  return [{"k": zeros(), "v": zeros()} for _ in range(num_layers)]
