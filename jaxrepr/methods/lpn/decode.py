"""Greedy LPN decoding as the reference code does it (github.com/clement-bonnet/lpn), with a
key/value cache.

Order as in the reference code: rows = argmax + 1 (from ctx), then cols = argmax + 1 (from R_out),
then every one of the R*C cells in raster order over the padded width, with the row-boundary fix.
`greedy_decode` runs the prefix [R_in, C_in, x, ctx] once into a cache, then feeds one token per
step (R_out, C_out, y_0, ..., y_{RC-2}): R*C + 1 single-token passes. `greedy_decode_full` is the
reference's method (the whole sequence re-run for every cell); tests check both agree. Argmax, not
sampling: Alg. 1 of Macfarlane & Bonnet, "Searching Latent Program Spaces", writes y ~ p; the
reference code is greedy. Cells outside the predicted shape are set to 0.

`distinct_attempts` decodes a test input's T best latents and makes attempt 2 the best of them
whose grid differs from attempt 1's (the reference code's attempt 2 is the second-best latent,
whose grid is often attempt 1's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrepr.methods.lpn.model import NUM_COLOURS, Decoder, cell_valid


def _boundary_source(k, cols_B, c: int):
  """Index of the logits that predict raster cell k (row-boundary fix); k scalar, (B,)."""
  r = k // c
  fixed = (r - 1) * c + cols_B
  return jnp.where((k % c == 0) & (r > 0), fixed, k)


def greedy_decode(decoder: Decoder, dparams, x_BxRxC, x_shape_Bx2, z_BxZ):
  """KV-cached greedy decoding; returns grid (B, R, C), shape (B, 2) and the logits used."""
  b, r, c = x_BxRxC.shape
  rc, p = r * c, decoder.prefix_len
  app = lambda method, *a: decoder.apply(dparams, *a, method=method)
  row_logits, state = app(Decoder.prefill, x_BxRxC, x_shape_Bx2, z_BxZ)
  rows = jnp.argmax(row_logits, -1).astype(jnp.int32) + 1
  special = app(Decoder.special_coords, b)
  ones = jnp.ones((b,), bool)
  col_logits, state = decoder.apply(
    dparams,
    state,
    app(Decoder.shape_token, rows, 0),
    special,
    jnp.int32(p),
    ones,
    "cols",
    method=Decoder.step,
  )
  cols = jnp.argmax(col_logits, -1).astype(jnp.int32) + 1
  first, state = decoder.apply(
    dparams,
    state,
    app(Decoder.shape_token, cols, 1),
    special,
    jnp.int32(p + 1),
    ones,
    "grid",
    method=Decoder.step,
  )
  buf_BxKx10 = jnp.zeros((b, rc, NUM_COLOURS), jnp.float32).at[:, 0].set(first)
  valid_BxK = cell_valid(jnp.stack([rows, cols], -1), r, c)
  b_idx = jnp.arange(b)

  def body(carry, k):
    state, buf, y = carry
    src = _boundary_source(k, cols, c)
    logits = buf[b_idx, src]
    y_k = jnp.argmax(logits, -1).astype(jnp.int32)
    y = y.at[:, k].set(y_k)
    tok, coords = decoder.apply(dparams, y_k, k, cols, method=Decoder.out_cell_token)
    nxt, state = decoder.apply(
      dparams, state, tok, coords, p + 2 + k, valid_BxK[:, k], "grid", method=Decoder.step
    )
    buf = buf.at[:, k + 1].set(nxt)
    return (state, buf, y), logits

  y0 = jnp.zeros((b, rc), jnp.int32)
  (state, buf, y), used = jax.lax.scan(body, (state, buf_BxKx10, y0), jnp.arange(rc - 1))
  last = buf[b_idx, _boundary_source(jnp.int32(rc - 1), cols, c)]
  y = y.at[:, rc - 1].set(jnp.argmax(last, -1).astype(jnp.int32))
  cell_logits = jnp.concatenate([jnp.moveaxis(used, 0, 1), last[:, None]], axis=1)
  shape = jnp.stack([rows, cols], -1)
  grid = jnp.where(valid_BxK, y, 0).reshape(b, r, c)
  return {
    "grid": grid,
    "shape": shape,
    "row_logits": row_logits,
    "col_logits": col_logits,
    "cell_logits": cell_logits,
  }


def greedy_decode_full(decoder: Decoder, dparams, x_BxRxC, x_shape_Bx2, z_BxZ):
  """Reference greedy decoding: one full teacher-forced pass per decoded token (no cache)."""
  b, r, c = x_BxRxC.shape
  rc = r * c
  run = lambda y, shape: decoder.apply(dparams, x_BxRxC, x_shape_Bx2, z_BxZ, y, shape)
  y0 = jnp.zeros((b, r, c), jnp.int32)
  placeholder = jnp.ones((b, 2), jnp.int32)
  row_logits = run(y0, placeholder)[0]
  rows = jnp.argmax(row_logits, -1).astype(jnp.int32) + 1
  col_logits = run(y0, jnp.stack([rows, placeholder[:, 1]], -1))[1]
  cols = jnp.argmax(col_logits, -1).astype(jnp.int32) + 1
  shape = jnp.stack([rows, cols], -1)

  def body(k, carry):
    y, used = carry
    logits_BxKx10 = run(y.reshape(b, r, c), shape)[2].reshape(b, rc, NUM_COLOURS)
    lk = logits_BxKx10[:, k]
    y = y.at[:, k].set(jnp.argmax(lk, -1).astype(jnp.int32))
    return y, used.at[:, k].set(lk)

  y, used = jax.lax.fori_loop(
    0, rc, body, (y0.reshape(b, rc), jnp.zeros((b, rc, NUM_COLOURS), jnp.float32))
  )
  grid = jnp.where(cell_valid(shape, r, c), y, 0).reshape(b, r, c)
  return {
    "grid": grid,
    "shape": shape,
    "row_logits": row_logits,
    "col_logits": col_logits,
    "cell_logits": used,
  }


def distinct_second(grids_KxTxRxC, shapes_KxTx2, scores_KxT):
  """Index (K,) of attempt 2 among T candidates ranked by score (candidate 0 is attempt 1): the
  best-scored one whose decoded grid or shape differs from candidate 0's and whose score is
  finite (a scored latent); candidate 1, the second best, when none differs."""
  t = grids_KxTxRxC.shape[1]
  same_grid = jnp.all(grids_KxTxRxC == grids_KxTxRxC[:, :1], axis=(2, 3))
  same_shape = jnp.all(shapes_KxTx2 == shapes_KxTx2[:, :1], axis=2)
  ok_KxT = ~(same_grid & same_shape) & jnp.isfinite(scores_KxT) & (jnp.arange(t) >= 1)[None]
  return jnp.where(jnp.any(ok_KxT, axis=1), jnp.argmax(ok_KxT, axis=1), 1)


def distinct_attempts(decoder: Decoder, dparams, x_KxRxC, x_shape_Kx2, z_KxTxZ, scores_KxT):
  """Attempts 1 and 2 of K test inputs from their T best latents (ranked by score): attempt 1
  decodes the best, attempt 2 is picked by `distinct_second` among the T decoded grids. Grids are
  zero outside their shape, so equal grids and shapes mean equal cropped outputs."""
  k, t, z = z_KxTxZ.shape
  r, c = x_KxRxC.shape[1:]
  out = greedy_decode(
    decoder,
    dparams,
    jnp.repeat(x_KxRxC, t, axis=0),
    jnp.repeat(x_shape_Kx2, t, axis=0),
    z_KxTxZ.reshape(k * t, z),
  )
  grids = out["grid"].reshape(k, t, r, c)
  shapes = out["shape"].reshape(k, t, 2)
  j = distinct_second(grids, shapes, scores_KxT)
  k_idx = jnp.arange(k)
  return {
    "grids": grids[:, 0],
    "shapes": shapes[:, 0],
    "grids_2": grids[k_idx, j],
    "shapes_2": shapes[k_idx, j],
    "score": scores_KxT[:, 0],
    "score_2": scores_KxT[k_idx, j],
  }
