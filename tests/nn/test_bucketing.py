"""Tests of length buckets: the bucket lengths, the chosen bucket, and values and gradients equal to
the padded computation under jit and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.nn import bucketing


def test_bucket_lengths():
  assert bucketing.bucket_lengths(300, 599, 4) == (374, 449, 524, 599)
  assert bucketing.bucket_lengths(300, 599, 1) == (599,)
  assert bucketing.bucket_lengths(5, 7, 10) == (5, 6, 7)  # no more buckets than sizes
  with pytest.raises(ValueError, match="min_len"):
    bucketing.bucket_lengths(0, 5, 2)
  with pytest.raises(ValueError, match="num_buckets"):
    bucketing.bucket_lengths(1, 5, 0)


def _masked_loss(params, data):
  """A loss that ignores padding: masked mean of a per-element MLP, plus the padded length seen."""
  h = jnp.tanh(data["x"] @ params["w1"]) @ params["w2"]
  m = data["mask"].astype(jnp.float32)
  loss = jnp.sum(h[..., 0] ** 2 * m) / jnp.sum(m)
  return loss, {"length": jnp.float32(data["x"].shape[1])}


def _data(sizes, n_max=12):
  x = jax.random.normal(jax.random.key(0), (len(sizes), n_max, 3))
  mask = jnp.arange(n_max)[None, :] < jnp.asarray(sizes)[:, None]
  return {"x": jnp.where(mask[..., None], x, 0.0), "mask": mask}


_CUT = lambda data, n: {k: v[:, :n] for k, v in data.items()}
_LARGEST = lambda data: jnp.max(jnp.sum(data["mask"], axis=1))


@pytest.mark.parametrize(
  "sizes,want_length", [([2, 3], 4), ([4, 1], 4), ([5, 8], 8), ([12, 1], 12), ([9, 9], 12)]
)
def test_bucketed_loss_equals_the_padded_loss_and_its_gradient(sizes, want_length):
  params = {
    "w1": jax.random.normal(jax.random.key(1), (3, 5)),
    "w2": jax.random.normal(jax.random.key(2), (5, 1)),
  }
  data = _data(sizes)
  loss = bucketing.bucketed_loss(_masked_loss, (4, 8, 12), _LARGEST, _CUT)
  grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, aux), grads = grad_fn(params, data)
  (want_value, _), want_grads = jax.value_and_grad(_masked_loss, has_aux=True)(params, data)
  assert aux["length"] == want_length
  np.testing.assert_allclose(value, want_value, rtol=1e-6)
  jax.tree.map(
    lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), grads, want_grads
  )
  # forward only (no differentiation) takes the same branch and value
  value_fwd, aux_fwd = jax.jit(loss)(params, data)
  assert aux_fwd["length"] == want_length
  np.testing.assert_allclose(value_fwd, want_value, rtol=1e-6)
  # a scaled outer cotangent scales the gradient (the custom VJP uses the incoming cotangent)
  grads3 = jax.grad(lambda p: 3.0 * loss(p, data)[0])(params)
  jax.tree.map(
    lambda g, w: np.testing.assert_allclose(g, 3.0 * w, rtol=1e-5, atol=1e-7), grads3, want_grads
  )


def test_bucketed_call_picks_the_bucket():
  fn = bucketing.bucketed_call(lambda d: jnp.float32(d["x"].shape[1]), (4, 8, 12), _LARGEST, _CUT)
  assert [int(jax.jit(fn)(_data(s))) for s in ([1, 4], [5], [11, 2])] == [4, 8, 12]
