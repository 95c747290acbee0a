"""What the LPN encoder and decoder share (Macfarlane & Bonnet, "Searching Latent Program Spaces",
arXiv 2411.08706, §3 and Tables 13 and 16): the grid conventions, the embedding tables and the
transformer options with their 2-D positions. The modules themselves are in model.py.

Grids are int (..., R, C) with colours 0-9 zero-padded to R x C = max_rows x max_cols; shapes count
rows/columns in [1, max]. A raster cell k = i * C + j is valid when i < rows and j < cols.

Positions: `positions='learned'` (reference code: factorised row + column tables) or `'rope'`
(paper's ARC model: 2-D RoPE on (row, col) in attention, no position tables). RoPE coordinates are
index / (max - 1); special tokens (CLS, shapes, ctx) use index -1, a position of their own.

Embedding tables and the CLS vector: N(0, 0.02^2), or the reference code's flax default
(`embedding_init`; `embedding_initializer` says why the first is the default).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.nn import transformer as tfm

NUM_COLOURS = 10

EMBEDDING_INITS = ("normal_0.02", "flax_default")


def embedding_initializer(name: str) -> nn.initializers.Initializer:
  """The initialiser of the embedding tables and the encoder's CLS vector.

  'flax_default' follows the reference code: its tables and CLS token are `nn.Embed`s with flax's
  default initialiser, N(0, 1/E) for width E. 'normal_0.02' (N(0, 0.02^2), the GPT-2/BERT
  convention) stays the default because every result and checkpoint of this package was trained
  with it, and they must not move. The two differ in the initial norm of a summed colour + row +
  column + channel token: about 0.04 sqrt(E) (0.4 at E = 96) against 2.
  """
  if name == "normal_0.02":
    return nn.initializers.normal(0.02)
  if name == "flax_default":
    return nn.linear.default_embed_init
  raise ValueError(f"unknown embedding init {name!r}; choose from {EMBEDDING_INITS}")


def embed(n: int, e: int, name: str, init: str) -> nn.Embed:
  """An (n, e) embedding table initialised by `embedding_initializer(init)`."""
  return nn.Embed(n, e, embedding_init=embedding_initializer(init), name=name)


def cell_valid(shape_Bx2: jax.Array, max_rows: int, max_cols: int) -> jax.Array:
  """(B, R*C) bool: raster cell k is inside the (rows, cols) shape."""
  i = jnp.arange(max_rows * max_cols) // max_cols
  j = jnp.arange(max_rows * max_cols) % max_cols
  return (i[None, :] < shape_Bx2[:, 0:1]) & (j[None, :] < shape_Bx2[:, 1:2])


class Trunk(nn.Module):
  """Shared options of the encoder and decoder, and their 2-D position coordinates."""

  max_rows: int
  max_cols: int
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_factor: int
  positions: str = "learned"
  rope_max_freq: float = 10.0
  dtype: str = "float32"
  remat: bool = False
  attention: str = "auto"
  shard_batch: bool = True  # False under vmap over a sharded axis (attention.dot_product_attention)
  embedding_init: str = "normal_0.02"  # one of EMBEDDING_INITS

  @property
  def embed_dim(self) -> int:
    return self.num_heads * self.head_dim

  def _coords(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
    r = rows.astype(jnp.float32) / max(self.max_rows - 1, 1)
    c = cols.astype(jnp.float32) / max(self.max_cols - 1, 1)
    return jnp.stack([r, c], axis=-1)

  def _angles(self, coords_BxTx2):
    if self.positions == "rope":
      return tfm.rope_angles(coords_BxTx2, self.head_dim, self.rope_max_freq)
    return None
