"""Grid-prediction metrics shared by the LPN evaluators (Macfarlane & Bonnet, "Searching Latent
Program Spaces", and its reference code's evaluator).

For a predicted grid and shape against the true output of one pair:
  exact      the shape matches and every cell inside it matches (what the paper reports);
  shape      the predicted (rows, cols) equals the true one;
  pixel      fraction of the true output's cells predicted correctly when the shape matches,
             0 when it does not (the reference code's "pixel correctness").
Top-2 counts a pair as solved when either attempt is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pair_metrics(
  pred_grid_xRxC: jax.Array,
  pred_shape_x2: jax.Array,
  true_grid_xRxC: jax.Array,
  true_shape_x2: jax.Array,
) -> dict[str, jax.Array]:
  """Per-pair float metrics (leading axes kept): 'exact', 'shape', 'pixel'."""
  lead = (1,) * (true_grid_xRxC.ndim - 2)
  r, c = true_grid_xRxC.shape[-2:]
  rows = jnp.arange(r).reshape(lead + (r, 1))
  cols = jnp.arange(c).reshape(lead + (1, c))
  inside = (rows < true_shape_x2[..., 0, None, None]) & (cols < true_shape_x2[..., 1, None, None])
  shape_ok = jnp.all(pred_shape_x2 == true_shape_x2, axis=-1)
  same = (pred_grid_xRxC == true_grid_xRxC) & inside
  cells_ok = jnp.sum(same, axis=(-2, -1)) == jnp.sum(inside, axis=(-2, -1))
  pixel = jnp.sum(same, axis=(-2, -1)) / jnp.maximum(jnp.sum(inside, axis=(-2, -1)), 1)
  return {
    "exact": (shape_ok & cells_ok).astype(jnp.float32),
    "shape": shape_ok.astype(jnp.float32),
    "pixel": jnp.where(shape_ok, pixel, 0.0).astype(jnp.float32),
  }


def attempts_metrics(
  pred: dict, true_grid: jax.Array, true_shape: jax.Array
) -> dict[str, jax.Array]:
  """Metrics of attempt 1 plus 'top2' (either attempt exact); `pred` has grids/shapes(_2)."""
  first = pair_metrics(pred["grids"], pred["shapes"], true_grid, true_shape)
  second = pair_metrics(pred["grids_2"], pred["shapes_2"], true_grid, true_shape)
  first["top2"] = jnp.maximum(first["exact"], second["exact"])
  return first
