"""Max pooling over non-overlapping windows, written as a reshape and a max.

`max_pool(x, k, padding)` gives the values and the gradient of `flax.linen.max_pool(x, (k, k),
strides=(k, k), padding=padding)`. Why not call that: it lowers to XLA's reduce_window, whose
gradient is a select-and-scatter, which XLA's CPU backend runs slower than elementwise work; the
conv encoders of NoProp, the classifier and contrastive learning pool this way. The gradient is
written by hand (custom_vjp) so that, as in the select-and-scatter, a window whose maximum is tied
sends its whole gradient to the first of the tied entries (row-major within the window) rather than
splitting it among them as the derivative of a max reduction would: in bfloat16, ties between
positive values are common enough after a ReLU for that to change the gradient.
"""

import functools

import jax
import jax.numpy as jnp


def max_pool(x_BxHxWxC: jax.Array, window: int = 2, padding: str = "VALID") -> jax.Array:
  """Max over each `window` x `window` block of the two spatial axes (stride `window`); 'SAME'
  pads with -inf where XLA's SAME padding pads, 'VALID' drops the rows and columns left over."""
  if x_BxHxWxC.ndim != 4:
    raise ValueError(f"max_pool expects NHWC arrays, got shape {x_BxHxWxC.shape}")
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"max_pool: padding must be 'SAME' or 'VALID', got {padding!r}")
  _, h, w, _ = x_BxHxWxC.shape
  if padding == "VALID":
    x = x_BxHxWxC[:, : h - h % window, : w - w % window]
  else:
    pads = [(0, 0)]
    for n in (h, w):
      total = -(-n // window) * window - n
      pads.append((total // 2, total - total // 2))  # jax.lax.padtype_to_pads' split
    x = jnp.pad(x_BxHxWxC, pads + [(0, 0)], constant_values=-jnp.inf)
  return _window_max(x, window)


def _windows(x_BxHxWxC: jax.Array, window: int) -> jax.Array:
  b, h, w, c = x_BxHxWxC.shape
  return x_BxHxWxC.reshape(b, h // window, window, w // window, window, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _window_max(x_BxHxWxC: jax.Array, window: int) -> jax.Array:
  return _windows(x_BxHxWxC, window).max(axis=(2, 4))


def _window_max_fwd(x_BxHxWxC, window):
  out = _window_max(x_BxHxWxC, window)
  return out, (x_BxHxWxC, out)


def _window_max_bwd(window, saved, g_BxhxwxC):
  x_BxHxWxC, out = saved
  hit = _windows(x_BxHxWxC, window) == out[:, :, None, :, None, :]  # (B, h, k, w, k, C)
  # Row-major rank of each hit within its window: hits in the rows above, then to the left.
  per_row = jnp.sum(hit, axis=4, keepdims=True, dtype=jnp.int32)
  rank = jnp.cumsum(per_row, axis=2) - per_row + jnp.cumsum(hit, axis=4, dtype=jnp.int32)
  first = hit & (rank == 1)
  g = jnp.where(first, g_BxhxwxC[:, :, None, :, None, :], 0).astype(x_BxHxWxC.dtype)
  return (g.reshape(x_BxHxWxC.shape),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)
