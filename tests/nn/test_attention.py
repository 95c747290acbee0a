"""The blocked attention core equals the plain one (values and gradients) and saves memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.nn import attention


def _inputs(b, t, s, h, d, shared_mask, dtype=jnp.float32, seed=0):
  ks = jax.random.split(jax.random.key(seed), 5)
  q = jax.random.normal(ks[0], (b, t, h, d), dtype)
  k = jax.random.normal(ks[1], (b, s, h, d), dtype)
  v = jax.random.normal(ks[2], (b, s, h, d), dtype)
  mask = jax.random.uniform(ks[3], (b, 1 if shared_mask else t, s)) > 0.4
  if not shared_mask:
    mask = mask.at[:, 0].set(False)  # a fully masked query row
  w = jax.random.normal(ks[4], (b, t, h, d))
  return q, k, v, mask, w


def _loss(impl, mask, w, block_bytes):
  def f(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, impl, block_bytes)
    return jnp.sum(jnp.sin(out.astype(jnp.float32)) * w)

  return f


@pytest.mark.parametrize(
  "b,t,s,shared,block_bytes",
  [
    (4, 7, 7, True, 2**21),  # one block holds everything
    (4, 7, 9, False, 2**21),  # per-query mask with a fully masked row
    (6, 13, 11, False, 3 * 11 * 4 * 5),  # 5 queries per block: T padded to 15
    (6, 13, 11, True, 3 * 11 * 4 * 2),  # several blocks of sequences and of queries
    (6, 1, 11, False, 2**21),  # one query (incremental decoding)
  ],
)
def test_blocked_matches_xla_values_and_gradients(b, t, s, shared, block_bytes):
  q, k, v, mask, w = _inputs(b, t, s, 3, 8, shared)
  out_x = attention.dot_product_attention(q, k, v, mask, "xla")
  out_b = jax.jit(lambda *a: attention.dot_product_attention(*a, mask, "blocked", block_bytes))(
    q, k, v
  )
  np.testing.assert_allclose(out_b, out_x, atol=2e-6)
  g_x = jax.grad(_loss("xla", mask, w, block_bytes), (0, 1, 2))(q, k, v)
  g_b = jax.jit(jax.grad(_loss("blocked", mask, w, block_bytes), (0, 1, 2)))(q, k, v)
  for gb, gx in zip(g_b, g_x):
    np.testing.assert_allclose(gb, gx, atol=5e-6)


def test_blocked_bfloat16_close_to_xla():
  q, k, v, mask, w = _inputs(4, 7, 7, 2, 8, False, jnp.bfloat16)
  out_x = attention.dot_product_attention(q, k, v, mask, "xla").astype(jnp.float32)
  out_b = attention.dot_product_attention(q, k, v, mask, "blocked")
  assert out_b.dtype == jnp.bfloat16
  out_b = out_b.astype(jnp.float32)
  assert bool(jnp.all(jnp.isfinite(out_b)))
  np.testing.assert_allclose(out_b, out_x, atol=3e-2)


def test_blocked_second_order_gradients_match_xla():
  """Gradients of gradients (LPN's Grad k ** differentiates through a latent gradient step)."""
  q, k, v, mask, w = _inputs(6, 13, 11, 3, 8, False)

  def outer(impl):
    inner = _loss(impl, mask, w, 3 * 11 * 4 * 5)
    return lambda q, k, v: jnp.sum(jnp.square(jax.grad(inner, 0)(q, k, v)))

  g_x = jax.grad(outer("xla"), (0, 1, 2))(q, k, v)
  g_b = jax.jit(jax.grad(outer("blocked"), (0, 1, 2)))(q, k, v)
  for gb, gx in zip(g_b, g_x):
    np.testing.assert_allclose(gb, gx, atol=2e-5, rtol=1e-4)


def test_block_sizes_fit_the_budget_and_divide_the_batch():
  for b, t, s, h, budget in [
    (512, 205, 205, 6, 2**23),
    (7, 1805, 1805, 8, 2**23),
    (12, 3, 3, 1, 100),
  ]:
    seqs, q_block = attention.block_sizes(b, t, s, h, budget)
    assert b % seqs == 0 and 1 <= q_block <= t
    assert seqs * q_block * h * s * 4 <= max(budget, h * s * 4)


def test_blocked_backward_needs_less_memory():
  q, k, v, mask, w = _inputs(32, 128, 128, 4, 8, True)
  temp = {}
  for impl in ("xla", "blocked"):
    grad = jax.jit(jax.grad(_loss(impl, mask, w, 2**18), (0, 1, 2)))
    temp[impl] = grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
  probs_bytes = 32 * 4 * 128 * 128 * 4
  assert temp["xla"] >= probs_bytes  # keeps (B, H, T, S) probabilities
  assert temp["blocked"] < temp["xla"] / 4


def test_bad_implementation_and_mask_are_named():
  q, k, v, mask, _ = _inputs(2, 3, 3, 1, 4, True)
  with pytest.raises(ValueError, match="implementation"):
    attention.dot_product_attention(q, k, v, mask, "flash")
  with pytest.raises(ValueError, match="mask"):
    attention.dot_product_attention(q, k, v, jnp.ones((2, 2, 3), bool))


def test_blocked_splits_its_loops_over_batch_sharded_devices():
  """Under a mesh that shards the batch, each device runs the block loops over its own sequences
  (shard_map): no all-gather of q, k, v or the mask, and the same values and gradients."""
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (simulated) devices")
  from jaxrepr import parallel

  mesh = parallel.make_mesh(len(devices))
  q, k, v, mask, w = _inputs(2 * len(devices), 9, 9, 2, 4, False)
  grad = jax.grad(_loss("blocked", mask, w, 2 * 9 * 4 * 9 * 2), (0, 1, 2))  # 2 sequences a block
  expected = jax.jit(grad)(q, k, v)
  with jax.set_mesh(mesh):
    sharded = jax.device_put((q, k, v), parallel.batch_sharding(mesh))
    compiled = jax.jit(grad).lower(*sharded).compile()
    got = compiled(*sharded)
  # no all-reduce either: the shard_map's specs name every batch axis, the size-1 one included
  assert "all-gather" not in compiled.as_text() and "all-reduce" not in compiled.as_text()
  for g, e in zip(got, expected):
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["blocked", "xla"])
def test_attention_and_logsumexp_match_the_definition(impl):
  q, k, v, mask, _ = _inputs(6, 13, 11, 3, 4, False)
  out, lse = attention.attention_and_logsumexp(q, k, v, mask, impl, 3 * 11 * 4 * 5)
  logits = np.einsum("bthd,bshd->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64)) / 2.0
  logits = np.where(np.asarray(mask)[:, None], logits, -1e30)
  top = logits.max(-1, keepdims=True)
  want_lse = (top[..., 0] + np.log(np.exp(logits - top).sum(-1))).transpose(0, 2, 1)
  rows = np.asarray(mask).any(-1)  # fully masked rows: lse ~ the float minimum
  np.testing.assert_allclose(np.asarray(lse)[rows], want_lse[rows], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out, attention.dot_product_attention(q, k, v, mask, "xla"), atol=1e-5)


def test_vmap_over_a_sharded_axis_keeps_its_sharding_with_shard_batch_off():
  """Evaluation vmaps over tasks, the sharded axis: with shard_batch=False (what lpn.solve_task
  uses) the inner batch is not resharded (no all-to-all); values equal the unsharded ones."""
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (simulated) devices")
  from jaxrepr import parallel

  mesh = parallel.make_mesh(len(devices))
  q, k, v, mask, _ = _inputs(len(devices) ** 2, 5, 5, 2, 4, True)
  split = lambda x: x.reshape((len(devices), len(devices)) + x.shape[1:])
  args = [split(x) for x in (q, k, v, mask)]
  fn = jax.vmap(
    lambda q, k, v, m: attention.dot_product_attention(q, k, v, m, "blocked", shard_batch=False)
  )
  expected = jax.jit(fn)(*args)
  with jax.set_mesh(mesh):
    sharded = jax.device_put(args, parallel.batch_sharding(mesh))
    compiled = jax.jit(fn).lower(*sharded).compile()
    got = compiled(*sharded)
  assert "all-to-all" not in compiled.as_text() and "all-gather" not in compiled.as_text()
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)


def _decoder_structure(t: int, p: int) -> np.ndarray:
  """LPN's decoder pattern: tokens before p - 1 see that block and token p - 1; the rest see the
  block and, causally, each other."""
  q, k = np.arange(t)[:, None], np.arange(t)[None, :]
  in_q, in_k = q < p - 1, k < p - 1
  return (in_q & (in_k | (k == p - 1))) | (~in_q & (in_k | (k <= q)))


@pytest.mark.parametrize("block_bytes", [2**21, 3 * 13 * 4 * 4])
def test_structure_equals_the_full_mask_values_and_gradients(block_bytes):
  """A static structure ANDed with per-sequence key masks gives the values and gradients of the
  materialised (B, T, S) mask, with the blocked form skipping the keys its query runs cannot see."""
  b, t, p = 4, 13, 6
  structure = _decoder_structure(t, p)
  assert len(attention.query_segments(structure, t, t)) == 2
  q, k, v, _, w = _inputs(b, t, t, 3, 8, True)
  keys = jax.random.uniform(jax.random.key(7), (b, t)) > 0.3
  keys = keys.at[:, :2].set(True)  # every row sees a key
  mask, full = keys[:, None, :], keys[:, None, :] & structure[None]

  def loss(impl, m, st):
    def f(q, k, v):
      out = attention.dot_product_attention(q, k, v, m, impl, block_bytes, structure=st)
      return jnp.sum(jnp.sin(out) * w)

    return f

  want = attention.dot_product_attention(q, k, v, full, "xla")
  for impl in ("blocked", "xla"):
    got = jax.jit(
      lambda q, k, v, impl=impl: attention.dot_product_attention(
        q, k, v, mask, impl, block_bytes, structure=structure
      )
    )(q, k, v)
    np.testing.assert_allclose(got, want, atol=2e-6)
    g_want = jax.grad(loss("xla", full, None), (0, 1, 2))(q, k, v)
    g_got = jax.jit(jax.grad(loss(impl, mask, attention.StaticMask(structure)), (0, 1, 2)))(q, k, v)
    for a, e in zip(g_got, g_want):
      np.testing.assert_allclose(a, e, atol=5e-6)
  out, lse = attention.attention_and_logsumexp(
    q, k, v, mask, "blocked", block_bytes, structure=structure
  )
  want_out, want_lse = attention.attention_and_logsumexp(q, k, v, full, "xla")
  np.testing.assert_allclose(out, want_out, atol=2e-6)
  np.testing.assert_allclose(lse, want_lse, rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_output_zeros_in_both_forms():
  """A row that sees no key (here whole sequences, under a structure split into query runs)
  outputs zeros with zero gradients, in the blocked form as in the plain one."""
  t = 9
  structure = _decoder_structure(t, 4)
  q, k, v, _, w = _inputs(3, t, t, 2, 4, True)
  mask = jnp.zeros((3, 1, t), bool).at[0].set(True)  # sequences 1 and 2 see no key at all

  def f(impl, m, st):
    def g(q, k, v):
      out = attention.dot_product_attention(q, k, v, m, impl, structure=st)
      return jnp.sum(jnp.sin(out) * w), out

    return jax.jit(jax.value_and_grad(g, (0, 1, 2), has_aux=True))

  (_, out), grads = f("blocked", mask, structure)(q, k, v)
  (_, want), want_grads = f("xla", mask & structure[None], None)(q, k, v)
  np.testing.assert_allclose(out, want, atol=2e-6)
  assert float(jnp.max(jnp.abs(out[1:]))) == 0.0
  for g, e in zip(grads, want_grads):
    np.testing.assert_allclose(g, e, atol=5e-6)
    assert float(jnp.max(jnp.abs(g[1:]))) == 0.0


def test_query_segments_minimise_the_attended_pairs():
  causal = np.tril(np.ones((8, 8), bool))
  assert attention.query_segments(causal, 8, 8) == ((0, 4, 4), (4, 8, 8))  # 48 of 64 pairs
  assert attention.query_segments(causal, 8, 8, max_segments=1) == ((0, 8, 8),)
  assert attention.query_segments(None, 5, 7) == ((0, 5, 7),)
  blind = causal.copy()
  blind[1] = False  # a row that sees no key outputs zeros: it does not shape the runs
  assert attention.query_segments(blind, 8, 8) == ((0, 4, 4), (4, 8, 8))
  assert attention.query_segments(np.ones((1, 6), bool), 1, 6) == ((0, 1, 6),)  # one query
  # a split that saves under min_saving of the work is not taken
  almost_full = np.ones((10, 10), bool)
  almost_full[0, 9] = False
  assert attention.query_segments(almost_full, 10, 10) == ((0, 10, 10),)


def test_structure_of_the_wrong_shape_is_named():
  q, k, v, mask, _ = _inputs(2, 5, 6, 1, 4, True)
  with pytest.raises(ValueError, match="structure must be a static bool"):
    attention.dot_product_attention(q, k, v, mask, structure=np.ones((5, 5), bool))
