"""Max pooling over non-overlapping windows, written as a reshape and a max.

`max_pool(x, k, padding)` gives the values of `flax.linen.max_pool(x, (k, k), strides=(k, k),
padding=padding)`. Why not call that: it lowers to XLA's reduce_window, whose gradient is a
select-and-scatter, which XLA's CPU backend runs slower than the elementwise gradient of a plain
max reduction; the conv encoders of NoProp, the classifier and contrastive learning pool this way.
One difference in the gradient: where several entries of a window tie for the maximum,
reduce_window sends the window's gradient to the first, this max splits it evenly among them.
After a ReLU the usual tie is between zeros, whose gradient the ReLU stops either way.
"""

import jax
import jax.numpy as jnp


def max_pool(x_BxHxWxC: jax.Array, window: int = 2, padding: str = "VALID") -> jax.Array:
  """Max over each `window` x `window` block of the two spatial axes (stride `window`); 'SAME'
  pads with -inf where XLA's SAME padding pads, 'VALID' drops the rows and columns left over."""
  if x_BxHxWxC.ndim != 4:
    raise ValueError(f"max_pool expects NHWC arrays, got shape {x_BxHxWxC.shape}")
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"max_pool: padding must be 'SAME' or 'VALID', got {padding!r}")
  b, h, w, c = x_BxHxWxC.shape
  if padding == "VALID":
    x = x_BxHxWxC[:, : h - h % window, : w - w % window]
  else:
    pads = [(0, 0)]
    for n in (h, w):
      total = -(-n // window) * window - n
      pads.append((total // 2, total - total // 2))  # jax.lax.padtype_to_pads' split
    x = jnp.pad(x_BxHxWxC, pads + [(0, 0)], constant_values=-jnp.inf)
  _, hp, wp, _ = x.shape
  return x.reshape(b, hp // window, window, wp // window, window, c).max(axis=(2, 4))
