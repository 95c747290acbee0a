"""The transformer's `outputs` (only some tokens' last-layer rows) and static structure masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.nn import attention, transformer


def _setup(rope: bool, seed: int = 0):
  b, t, e, heads = 3, 11, 16, 2
  ks = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(ks[0], (b, t, e))
  keys = (jax.random.uniform(ks[1], (b, t)) > 0.3).at[:, :3].set(True)
  q, k = np.arange(t)[:, None], np.arange(t)[None, :]
  structure = (k <= q) | (k < 3)
  coords = jax.random.uniform(ks[2], (1, t, 2))
  angles = transformer.rope_angles(coords, e // heads, 10.0) if rope else None
  return x, keys[:, None, :], structure, angles


@pytest.mark.parametrize("rope,remat", [(False, False), (True, False), (True, True)])
def test_outputs_equal_the_full_stack_sliced(rope, remat):
  """outputs=(a, b): the last layer computes only those rows; values and gradients (parameters
  and input) equal the full stack's rows a..b-1, with a structure mask and the blocked core."""
  x, mask, structure, angles = _setup(rope)
  model = transformer.Transformer(
    num_layers=2, num_heads=2, head_dim=8, mlp_factor=2, remat=remat, attention="blocked"
  )
  st = attention.StaticMask(structure)
  params = model.init(jax.random.key(1), x, mask, angles, structure=st)
  w = jax.random.normal(jax.random.key(2), (3, 6, 16))

  def loss(params, x, outputs):
    h, _ = model.apply(params, x, mask, angles, structure=st, outputs=outputs)
    h = h if outputs is not None else h[:, 4:10]
    return jnp.sum(jnp.sin(h) * w), h

  (l_full, h_full), g_full = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x, None)
  (l_part, h_part), g_part = jax.jit(
    jax.value_and_grad(loss, (0, 1), has_aux=True), static_argnums=2
  )(params, x, (4, 10))
  assert h_part.shape == (3, 6, 16)
  np.testing.assert_allclose(h_part, h_full, atol=2e-5)
  for a, e in zip(jax.tree.leaves(g_part), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, e, atol=2e-5)


def test_one_output_row_with_a_structure():
  """outputs of one token: its structure row alone, a single query run."""
  x, mask, structure, _ = _setup(False)
  model = transformer.Transformer(
    num_layers=2, num_heads=2, head_dim=8, mlp_factor=1, attention="blocked"
  )
  st = attention.StaticMask(structure)
  params = model.init(jax.random.key(0), x, mask, structure=st)
  full, _ = model.apply(params, x, mask, structure=st)
  one, _ = model.apply(params, x, mask, structure=st, outputs=(5, 6))
  np.testing.assert_allclose(one, full[:, 5:6], atol=2e-5)


def test_outputs_with_a_cache_or_out_of_range_is_an_error():
  x, mask, structure, _ = _setup(False)
  model = transformer.Transformer(num_layers=1, num_heads=2, head_dim=8, mlp_factor=1)
  params = model.init(jax.random.key(0), x, mask)
  cache = transformer.init_cache(1, 3, 11, 2, 8)
  with pytest.raises(ValueError, match="outputs is for teacher-forced calls"):
    model.apply(params, x, mask, cache=cache, index=jnp.zeros((), jnp.int32), outputs=(0, 2))
  with pytest.raises(ValueError, match="outputs must be"):
    model.apply(params, x, mask, outputs=(3, 12))
