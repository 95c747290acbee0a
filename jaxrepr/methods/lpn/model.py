"""LPN encoder and decoder (Macfarlane & Bonnet, "Searching Latent Program Spaces",
arXiv 2411.08706, §3 and Tables 13 and 16).

Grids are int (..., R, C) with colours 0-9 zero-padded to R x C = max_rows x max_cols; shapes count
rows/columns in [1, max]. Leading axes are flattened into one batch axis B by the callers.

Encoder, sequence [CLS, R_in, R_out, C_in, C_out, g(0,0,in), g(0,0,out), g(0,1,in), ...]
(T_enc = 5 + 2RC): colour + row + column + channel embeddings, non-causal attention over valid keys,
h_CLS -> LayerNorm -> (mu, log sigma^2) with bias-free Dense layers.

Decoder, sequence [R_in, C_in, x_0..x_{RC-1}, ctx, R_out, C_out, y_0..y_{RC-1}] (T = 5 + 2RC):
ctx = W_ctx z; output cell (i, j) carries the position of the cell it predicts ("next-position
embedding": (i, j+1), or (i+1, 0) at the last valid column). Input tokens see the input block and
ctx; ctx and output tokens see the input block and, causally, the output block. Heads (each
LayerNorm + bias-free Dense): rows from h(ctx), columns from h(R_out), cell k from the token before
it; the row-boundary fix takes the logits of cell (r, 0), r >= 1, from the last valid cell of row r
- 1.

Masks hold on keys only (valid_k), not on queries as in the reference code: an invalid token never
feeds a valid one, so every valid token's hidden state is the same, and no row is fully masked.

Positions (learned tables or 2-D RoPE), the embedding initialisers, the grid conventions
(`NUM_COLOURS`, `cell_valid`) and the options both modules share are in trunk.py; the public
names among them are importable from here too.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr.errors import ConfigError
from jaxrepr.methods.lpn.trunk import (
  EMBEDDING_INITS,
  NUM_COLOURS,
  Trunk,
  cell_valid,
  embed,
  embedding_initializer,
)
from jaxrepr.nn import attention as attention_lib
from jaxrepr.nn import transformer as tfm
from jaxrepr.nn.precision import compute_dtype


def _dtype(name: str) -> Any:
  return compute_dtype(name)


class Encoder(Trunk):
  """q_phi(z | x, y): (grids (B, R, C, 2), shapes (B, 2, 2)) -> (mu, logvar), each
  (B, latent_dim)."""

  latent_dim: int = 32

  @nn.compact
  def __call__(self, grids_BxRxCx2: jax.Array, shapes_Bx2x2: jax.Array):
    b, r, c = grids_BxRxCx2.shape[:3]
    e, dt = self.embed_dim, _dtype(self.dtype)
    emb = functools.partial(embed, init=self.embedding_init)
    colour = emb(NUM_COLOURS, e, "colour")(grids_BxRxCx2)  # B R C 2 E
    chan_2xE = emb(2, e, "channel").embedding
    cells = colour + chan_2xE[None, None, None, :, :]
    if self.positions == "learned":
      row_RxE = emb(self.max_rows, e, "row").embedding
      col_CxE = emb(self.max_cols, e, "col").embedding
      cells = cells + row_RxE[None, :, None, None, :] + col_CxE[None, None, :, None, :]
    cells_BxGxE = cells.reshape(b, r * c * 2, e)
    shape_row = emb(self.max_rows, e, "shape_row")(shapes_Bx2x2[:, 0, :] - 1) + chan_2xE[None]
    shape_col = emb(self.max_cols, e, "shape_col")(shapes_Bx2x2[:, 1, :] - 1) + chan_2xE[None]
    cls_1xE = self.param("cls", embedding_initializer(self.embedding_init), (1, e))
    cls_Bx1xE = jnp.broadcast_to(cls_1xE[None], (b, 1, e))
    x_BxTxE = jnp.concatenate([cls_Bx1xE, shape_row, shape_col, cells_BxGxE], axis=1).astype(dt)

    in_valid = cell_valid(jnp.stack([shapes_Bx2x2[:, 0, 0], shapes_Bx2x2[:, 1, 0]], -1), r, c)
    out_valid = cell_valid(jnp.stack([shapes_Bx2x2[:, 0, 1], shapes_Bx2x2[:, 1, 1]], -1), r, c)
    grid_valid = jnp.stack([in_valid, out_valid], axis=-1).reshape(b, r * c * 2)
    key_valid_BxT = jnp.concatenate([jnp.ones((b, 5), bool), grid_valid], axis=1)
    mask_Bx1xT = key_valid_BxT[:, None, :]

    angles = None
    if self.positions == "rope":
      ii = jnp.repeat(jnp.arange(r * c) // c, 2)
      jj = jnp.repeat(jnp.arange(r * c) % c, 2)
      rows = jnp.concatenate([-jnp.ones(5, jnp.int32), ii])
      cols = jnp.concatenate([-jnp.ones(5, jnp.int32), jj])
      angles = self._angles(self._coords(rows, cols)[None])
    # only CLS's output is read: the last layer computes CLS's row alone
    h_Bx1xE, _ = tfm.Transformer(
      self.num_layers,
      self.num_heads,
      self.head_dim,
      self.mlp_factor,
      dt,
      self.remat,
      self.attention,
      self.shard_batch,
      name="transformer",
    )(x_BxTxE, mask_Bx1xT, angles, outputs=(0, 1))
    h_BxE = tfm.layer_norm(h_Bx1xE[:, 0, :]).astype(jnp.float32)
    mu_BxZ = nn.Dense(self.latent_dim, use_bias=False, name="mu")(h_BxE)
    logvar_BxZ = nn.Dense(self.latent_dim, use_bias=False, name="logvar")(h_BxE)
    return mu_BxZ, logvar_BxZ


class Decoder(Trunk):
  """p_theta(y | x, z), teacher-forced (`__call__`) or incrementally (`prefill`, `step`)."""

  @property
  def prefix_len(self) -> int:  # [R_in, C_in, x_0..x_{RC-1}, ctx]
    return 3 + self.max_rows * self.max_cols

  @property
  def seq_len(self) -> int:
    return self.prefix_len + 2 + self.max_rows * self.max_cols

  def setup(self):
    e = self.embed_dim
    emb = functools.partial(embed, init=self.embedding_init)
    self.colour = emb(NUM_COLOURS, e, "colour")
    self.io = emb(2, e, "io")
    self.shape_row = emb(self.max_rows, e, "shape_row")
    self.shape_col = emb(self.max_cols, e, "shape_col")
    if self.positions == "learned":
      self.row = emb(self.max_rows, e, "row")
      self.col = emb(self.max_cols, e, "col")
    self.ctx = nn.Dense(e, use_bias=False, name="ctx")
    self.transformer = tfm.Transformer(
      self.num_layers,
      self.num_heads,
      self.head_dim,
      self.mlp_factor,
      _dtype(self.dtype),
      self.remat,
      self.attention,
      self.shard_batch,
    )
    self.row_head = nn.Dense(self.max_rows, use_bias=False, name="row_head")
    self.col_head = nn.Dense(self.max_cols, use_bias=False, name="col_head")
    self.grid_head = nn.Dense(NUM_COLOURS, use_bias=False, name="grid_head")

  def _pos(self, rows, cols):
    if self.positions == "learned":
      return self.row(jnp.clip(rows, 0, self.max_rows - 1)) + self.col(
        jnp.clip(cols, 0, self.max_cols - 1)
      )
    return jnp.zeros(jnp.shape(rows) + (self.embed_dim,), jnp.float32)  # RoPE acts in attention

  def _next_pos(self, k, c_out):
    """Row/column of the cell that output token k predicts; k (B, K), c_out (B, 1)."""
    i, j = k // self.max_cols, k % self.max_cols
    last = j >= c_out - 1
    return jnp.where(last, i + 1, i), jnp.where(last, 0, j + 1)

  def _out_cells(self, y_BxK, k_BxK, c_out_Bx1):
    ni, nj = self._next_pos(k_BxK, c_out_Bx1)
    return self.colour(y_BxK) + self._pos(ni, nj) + self.io.embedding[1][None, None], (ni, nj)

  def _prefix_tokens(self, x_BxRxC, x_shape_Bx2, z_BxZ):
    b, rc = x_BxRxC.shape[0], self.max_rows * self.max_cols
    k = jnp.arange(rc)
    ii, jj = k // self.max_cols, k % self.max_cols
    io0 = self.io.embedding[0][None, None]
    cells = self.colour(x_BxRxC.reshape(b, rc)) + self._pos(ii, jj)[None] + io0
    shapes = (
      jnp.stack(
        [self.shape_row(x_shape_Bx2[:, 0] - 1), self.shape_col(x_shape_Bx2[:, 1] - 1)], axis=1
      )
      + io0
    )
    ctx = self.ctx(z_BxZ.astype(jnp.float32))[:, None, :]
    tokens = jnp.concatenate([shapes, cells, ctx], axis=1)
    key_valid = jnp.concatenate(
      [
        jnp.ones((b, 2), bool),
        cell_valid(x_shape_Bx2, self.max_rows, self.max_cols),
        jnp.ones((b, 1), bool),
      ],
      axis=1,
    )
    rows = jnp.concatenate([-jnp.ones(2, jnp.int32), ii, -jnp.ones(1, jnp.int32)])
    cols = jnp.concatenate([-jnp.ones(2, jnp.int32), jj, -jnp.ones(1, jnp.int32)])
    return tokens, key_valid, self._coords(rows, cols)[None]

  def _struct_mask(self) -> np.ndarray:
    """(T, T) bool: which tokens a token may attend to, before key validity."""
    t, p = self.seq_len, self.prefix_len
    q, k = np.arange(t)[:, None], np.arange(t)[None, :]
    in_q, in_k, ctx = q < p - 1, k < p - 1, p - 1
    return (in_q & (in_k | (k == ctx))) | (~in_q & (in_k | (k <= q)))

  def _heads_rows(self, h):
    return self.row_head(tfm.layer_norm(h).astype(jnp.float32))

  def _heads_cols(self, h):
    return self.col_head(tfm.layer_norm(h).astype(jnp.float32))

  def _heads_grid(self, h):
    return self.grid_head(tfm.layer_norm(h).astype(jnp.float32))

  def __call__(
    self, x_BxRxC, x_shape_Bx2, z_BxZ, y_BxRxC, y_shape_Bx2, latent_grad_only: bool = False
  ):
    """Teacher-forced logits: rows (B, max_rows), cols (B, max_cols), cells (B, R, C, 10).

    `latent_grad_only`: the same logits, computed for a gradient w.r.t. z alone (latent search):
    z enters only through the ctx token, so the first layer's attention backward reduces to ctx's
    key, value and row (`transformer.one_token_gradient_attention`). Gradients w.r.t. the
    parameters are then not the plain ones: use it through `latent_ascent.pair_scores`, which
    stops them.
    """
    b, r, c = x_BxRxC.shape
    rc, dt = r * c, _dtype(self.dtype)
    pre, pre_valid, pre_coords = self._prefix_tokens(x_BxRxC, x_shape_Bx2, z_BxZ)
    io1 = self.io.embedding[1][None, None]
    out_shapes = (
      jnp.stack(
        [self.shape_row(y_shape_Bx2[:, 0] - 1), self.shape_col(y_shape_Bx2[:, 1] - 1)], axis=1
      )
      + io1
    )
    k_BxK = jnp.broadcast_to(jnp.arange(rc)[None], (b, rc))
    cells, (ni, nj) = self._out_cells(y_BxRxC.reshape(b, rc), k_BxK, y_shape_Bx2[:, 1:2])
    x_BxTxE = jnp.concatenate([pre, out_shapes, cells], axis=1).astype(dt)
    key_valid = jnp.concatenate(
      [pre_valid, jnp.ones((b, 2), bool), cell_valid(y_shape_Bx2, r, c)], axis=1
    )
    # the structure (which segment sees which) is static and shared: the attention skips the
    # keys a run of queries cannot see and never forms a per-sequence (T, T) mask
    mask_Bx1xT = key_valid[:, None, :]
    structure = attention_lib.StaticMask(self._struct_mask())
    angles = None
    if self.positions == "rope":
      out_coords = jnp.concatenate(
        [
          jnp.broadcast_to(
            self._coords(-jnp.ones(2, jnp.int32), -jnp.ones(2, jnp.int32))[None], (b, 2, 2)
          ),
          self._coords(ni, nj),
        ],
        axis=1,
      )
      coords = jnp.concatenate(
        [jnp.broadcast_to(pre_coords, (b,) + pre_coords.shape[1:]), out_coords], axis=1
      )
      angles = self._angles(coords)
    p = self.prefix_len
    x_rest = None
    if latent_grad_only:
      # the same sequence with the ctx of a zero latent: the first layer's constants computed from
      # it do not depend on z, so the passes of one search share them (one_token_gradient_attention)
      pre0 = self._prefix_tokens(x_BxRxC, x_shape_Bx2, jnp.zeros_like(z_BxZ))[0]
      x_rest = jnp.concatenate([pre0, out_shapes, cells], axis=1).astype(dt)
    # the heads read ctx and the output block only: the last layer computes just their rows
    h_BxOxE, _ = self.transformer(
      x_BxTxE,
      mask_Bx1xT,
      angles,
      grad_token=p - 1 if latent_grad_only else None,
      structure=structure,
      outputs=(p - 1, self.seq_len),
      x_rest_BxTxE=x_rest,
    )
    row_logits = self._heads_rows(h_BxOxE[:, 0])
    col_logits = self._heads_cols(h_BxOxE[:, 1])
    grid_BxKx10 = self._heads_grid(h_BxOxE[:, 2 : 2 + rc])
    return row_logits, col_logits, row_boundary_fix(grid_BxKx10, y_shape_Bx2[:, 1], r, c)

  def prefill(self, x_BxRxC, x_shape_Bx2, z_BxZ):
    """Runs [R_in, C_in, x, ctx] into a fresh cache; returns (row logits, decoding state)."""
    b = x_BxRxC.shape[0]
    pre, pre_valid, pre_coords = self._prefix_tokens(x_BxRxC, x_shape_Bx2, z_BxZ)
    t, p = self.seq_len, self.prefix_len
    cache = tfm.init_cache(self.num_layers, b, t, self.num_heads, self.head_dim, _dtype(self.dtype))
    key_valid = jnp.concatenate([pre_valid, jnp.zeros((b, t - p), bool)], axis=1)
    mask = jnp.asarray(self._struct_mask()[:p])[None] & key_valid[:, None, :]
    angles = self._angles(jnp.broadcast_to(pre_coords, (b,) + pre_coords.shape[1:]))
    h, cache = self.transformer(
      pre.astype(_dtype(self.dtype)), mask, angles, cache, jnp.zeros((), jnp.int32)
    )
    return self._heads_rows(h[:, -1]), {"cache": cache, "key_valid": key_valid}

  def step(self, state, token_BxE, coords_Bx2, index, valid_B, head: str):
    """Feeds one output-block token at sequence `index`; returns (logits of `head`, state)."""
    key_valid = jax.lax.dynamic_update_slice(
      state["key_valid"], valid_B[:, None], (jnp.zeros((), jnp.int32), index)
    )
    causal = jnp.arange(self.seq_len)[None, :] <= index
    mask = (key_valid & causal)[:, None, :]
    angles = self._angles(coords_Bx2[:, None, :])
    h, cache = self.transformer(
      token_BxE[:, None, :].astype(_dtype(self.dtype)), mask, angles, state["cache"], index
    )
    heads = {"cols": self._heads_cols, "grid": self._heads_grid}
    return heads[head](h[:, 0]), {"cache": cache, "key_valid": key_valid}

  def shape_token(self, value_B, which: int):
    """Embedding of the output row (which=0) or column (which=1) count token."""
    table = self.shape_row if which == 0 else self.shape_col
    return table(value_B - 1) + self.io.embedding[1][None]

  def out_cell_token(self, y_B, k, c_out_B):
    """Embedding and RoPE coordinates of output cell token k (scalar) holding colour y_B."""
    b = y_B.shape[0]
    k_Bx1 = jnp.full((b, 1), k, jnp.int32)
    emb, (ni, nj) = self._out_cells(y_B[:, None], k_Bx1, c_out_B[:, None])
    return emb[:, 0], self._coords(ni, nj)[:, 0]

  def special_coords(self, b: int):
    return jnp.broadcast_to(
      self._coords(-jnp.ones((), jnp.int32), -jnp.ones((), jnp.int32))[None], (b, 2)
    )


def row_boundary_fix(grid_BxKx10: jax.Array, c_out_B: jax.Array, r: int, c: int) -> jax.Array:
  """Logits of cell (i, 0), i >= 1, come from index (i-1)*C + C_out (reference
  `_get_last_non_padded_logits`): the prediction made at the last valid cell of row i-1."""
  b = grid_BxKx10.shape[0]
  src_BxR = (jnp.arange(r)[None, :] - 1) * c + c_out_B[:, None]
  src_BxR = jnp.where(jnp.arange(r)[None, :] == 0, 0, src_BxR)
  first_BxRx10 = jnp.take_along_axis(grid_BxKx10, src_BxR[:, :, None], axis=1)
  grid_BxRxCx10 = grid_BxKx10.reshape(b, r, c, NUM_COLOURS)
  return grid_BxRxCx10.at[:, :, 0, :].set(first_BxRx10)


def modules_from_config(model_cfg, precision: str = "float32") -> tuple[Encoder, Decoder]:
  """Encoder and Decoder built from `config.model` (see `default_model_config`) computing in
  `precision` (`config.precision`; parameters stay float32)."""
  common = dict(
    max_rows=model_cfg.max_rows,
    max_cols=model_cfg.max_cols,
    positions=model_cfg.positions,
    rope_max_freq=model_cfg.rope_max_freq,
    dtype=precision,
    remat=model_cfg.remat,
    attention=model_cfg.attention,
    embedding_init=model_cfg.embedding_init,
  )
  if model_cfg.embedding_init not in EMBEDDING_INITS:
    raise ConfigError(
      f"config.model.embedding_init must be one of {EMBEDDING_INITS}, "
      f"got {model_cfg.embedding_init!r}"
    )
  if model_cfg.positions not in ("learned", "rope"):
    raise ConfigError(
      f"config.model.positions must be 'learned' or 'rope', got {model_cfg.positions!r}"
    )
  if model_cfg.attention not in attention_lib.IMPLEMENTATIONS:
    raise ConfigError(
      f"config.model.attention must be one of {attention_lib.IMPLEMENTATIONS}, "
      f"got {model_cfg.attention!r}"
    )
  enc, dec = model_cfg.encoder, model_cfg.decoder
  encoder = Encoder(
    num_layers=enc.num_layers,
    num_heads=enc.num_heads,
    head_dim=enc.head_dim,
    mlp_factor=enc.mlp_factor,
    latent_dim=model_cfg.latent_dim,
    **common,
  )
  decoder = Decoder(
    num_layers=dec.num_layers,
    num_heads=dec.num_heads,
    head_dim=dec.head_dim,
    mlp_factor=dec.mlp_factor,
    **common,
  )
  return encoder, decoder
