"""Tiny LPN configurations, parameters and batches shared by the LPN tests."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxrepr import config as config_lib
from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import decode as decode_lib


def tiny_config(size: int = 3, positions: str = "learned") -> ml_collections.ConfigDict:
  cfg = config_lib.base_config()
  cfg.method = "lpn"
  cfg.model = lpn.default_model_config()
  m = cfg.model
  m.max_rows = m.max_cols = size
  m.latent_dim = 4
  m.positions = positions
  for sub in (m.encoder, m.decoder):
    sub.num_layers, sub.num_heads, sub.head_dim, sub.mlp_factor = 1, 2, 8, 1
  return cfg


def random_batch(b: int, n: int, size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  shapes = rng.integers(1, size + 1, (b, n, 2, 2)).astype(np.int32)
  grids = rng.integers(0, 10, (b, n, size, size, 2)).astype(np.int32)
  ii = np.arange(size)[None, None, :, None, None]
  jj = np.arange(size)[None, None, None, :, None]
  rows = np.moveaxis(shapes[:, :, 0, :], -1, -1)[:, :, None, None, :]
  cols = shapes[:, :, 1, :][:, :, None, None, :]
  grids = np.where((ii < rows) & (jj < cols), grids, 0).astype(np.int32)  # zero padding
  return {"grids": grids, "shapes": shapes}


@functools.cache
def tiny_params(size: int = 3, positions: str = "learned") -> dict:
  """Parameters of `tiny_config(size, positions)` from key 0, initialised once per process.

  The parameters depend on the config only, not on the batch, and a jitted init costs a fraction
  of an op-by-op one. The returned dict is shared between tests: never mutate it."""
  return jax.jit(lpn.build(tiny_config(size, positions)).init)(
    jax.random.key(0), random_batch(1, 2, size)
  )


@contextlib.contextmanager
def latents_in_shapes_2():
  """Inside, `predict` hands out the two attempts' latents (what the decoder received) in the place
  of `shapes_2` (K, 2, Z): a pass-through spy on `greedy_decode` and `solve_task` (grids_2 is
  still returned). Jit the predictions inside the context."""
  real_solve, real_decode = lpn.solve_task, decode_lib.greedy_decode
  seen = []

  def greedy_decode(decoder, dparams, x, x_shape, z):
    seen.append(z)
    return real_decode(decoder, dparams, x, x_shape, z)

  def solve_task(*args, **kwargs):
    del seen[:]
    out = real_solve(*args, **kwargs)
    (z_2KxZ,) = seen
    k = out["grids"].shape[0]
    return {**out, "shapes_2": jnp.stack([z_2KxZ[:k], z_2KxZ[k:]], axis=1)}

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(decode_lib, "greedy_decode", greedy_decode)
    mp.setattr(lpn, "solve_task", solve_task)
    yield
