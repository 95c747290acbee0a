"""Tests of the Set Transformer blocks: equivariance/invariance, masks, both modes against a numpy
transcription of the definitions, initialisation bounds, and errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxrepr.nn.set_attention import ISAB, MAB, PMA, SAB

MODES = ("reference", "paper")
B, N, D_IN, DIM, HEADS = 2, 7, 3, 8, 2


def _x(seed=0, b=B, n=N, d=D_IN):
  return jax.random.normal(jax.random.key(seed), (b, n, d))


def _blocks(mode, ln=None):
  return {
    "sab": SAB(DIM, HEADS, mode=mode, ln=ln),
    "isab": ISAB(DIM, HEADS, mode=mode, ln=ln, num_inds=3),
    "pma": PMA(DIM, HEADS, mode=mode, ln=ln, num_seeds=2),
  }


def _init_apply(block, x, mask=None):
  params = block.init(jax.random.key(1), x, mask)
  return params, lambda x_, m_=None: block.apply(params, x_, m_)


@pytest.mark.parametrize("mode,ln", [("reference", None), ("paper", None)])
def test_sab_isab_equivariant_pma_invariant(mode, ln):
  x = _x()
  perm = np.random.default_rng(0).permutation(N)
  for name, block in _blocks(mode, ln).items():
    _, f = _init_apply(block, x)
    out, out_perm = f(x), f(x[:, perm])
    if name == "pma":
      np.testing.assert_allclose(out_perm, out, atol=1e-5, err_msg=name)
    else:
      np.testing.assert_allclose(out_perm, out[:, perm], atol=1e-5, err_msg=name)
      # the property must not hold trivially: outputs depend on the other elements
      y = x.at[:, 0].set(5.0)
      assert not np.allclose(f(y)[:, 1:], out[:, 1:], atol=1e-4), name


@pytest.mark.parametrize("mode,ln", [("reference", None), ("reference", True), ("paper", None)])
def test_padding_changes_nothing(mode, ln):
  """Each padded set (NaN padding) gives its unpadded outputs at valid rows / pooled outputs."""
  sizes, n_max = [3, 5], 8
  x = _x(3, b=len(sizes), n=n_max)
  mask = jnp.arange(n_max)[None, :] < jnp.array(sizes)[:, None]
  x_pad = jnp.where(mask[:, :, None], x, jnp.nan)
  for name, block in _blocks(mode, ln).items():
    params, f = _init_apply(block, x, mask)
    out = f(x_pad, mask)
    assert np.all(np.isfinite(out)), name
    for b, n in enumerate(sizes):
      ref = f(x[b : b + 1, :n])[0]
      got = out[b] if name == "pma" else out[b, :n]
      np.testing.assert_allclose(got, ref, atol=2e-5, err_msg=f"{name} set {b}")
      if name != "pma":
        np.testing.assert_array_equal(out[b, n:], 0.0)
    grads = jax.grad(lambda p, block=block: jnp.sum(block.apply(p, x_pad, mask)))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), name


def _np_layer_norm(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_mab(p, x, y, heads, mode, ln):
  """The definitions, transcribed with numpy (reference: modules.py; paper: Eq. 6-7, pre-LN)."""
  lin = lambda name, v: v @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"])
  dim = p["fc_q"]["kernel"].shape[1]
  dh = dim // heads

  def attend(q, k, v, scale):
    outs = []
    for j in range(heads):
      s = slice(j * dh, (j + 1) * dh)
      logits = q[..., s] @ np.swapaxes(k[..., s], -1, -2) * scale
      a = np.exp(logits - logits.max(-1, keepdims=True))
      outs.append((a / a.sum(-1, keepdims=True)) @ v[..., s])
    return np.concatenate(outs, -1)

  if mode == "reference":
    q, k, v = lin("fc_q", x), lin("fc_k", y), lin("fc_v", y)
    o = q + attend(q, k, v, 1 / math.sqrt(dim))
    o = _np_layer_norm(o, p["ln0"]) if ln else o
    o = o + np.maximum(lin("fc_o", o), 0)
    return _np_layer_norm(o, p["ln1"]) if ln else o
  xn = _np_layer_norm(x, p["ln_q"]) if ln else x
  yn = _np_layer_norm(y, p["ln_k"]) if ln else y
  h = x + lin(
    "fc_out", attend(lin("fc_q", xn), lin("fc_k", yn), lin("fc_v", yn), 1 / math.sqrt(dh))
  )
  hn = _np_layer_norm(h, p["ln_ff"]) if ln else h
  return h + lin("ff_2", np.maximum(lin("ff_1", hn), 0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ln", [False, True])
def test_mab_matches_numpy_definition(mode, ln):
  d_q = 5 if mode == "reference" else DIM  # reference mode allows a width change in the MAB
  x, y = _x(4, n=4, d=d_q), _x(5, n=6, d=DIM)
  mab = MAB(DIM, HEADS, mode=mode, ln=ln)
  params = mab.init(jax.random.key(0), x, y)
  want = _np_mab(params["params"], np.asarray(x), np.asarray(y), HEADS, mode, ln)
  np.testing.assert_allclose(mab.apply(params, x, y), want, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ln", [False, True])
def test_shared_queries_match_the_numpy_definition_and_gradients(mode, ln):
  """Queries of batch size 1 (ISAB's inducing points, PMA's seeds) take the path that never forms
  keys and values; it gives the definition's outputs, masked padding (NaN here) changes nothing, and
  its gradients equal those of the direct path on queries broadcast over the batch (with finite
  padding: as in the direct path, a NaN that reaches a paper-mode LayerNorm poisons its gradient;
  the SAB/ISAB/PMA blocks zero their inputs' padding first)."""
  q, y = _x(6, b=1, n=3, d=DIM), _x(7, b=3, n=6, d=DIM)
  mask = jnp.arange(6)[None, :] < jnp.array([6, 4, 1])[:, None]
  y_nan = jnp.where(mask[..., None], y, jnp.nan)
  mab = MAB(DIM, HEADS, mode=mode, ln=ln)
  params = mab.init(jax.random.key(0), q, y)
  q_b = jnp.broadcast_to(q, (3,) + q.shape[1:])
  shared = mab.apply(params, q, y_nan, mask)
  chex.assert_shape(shared, (3, 3, DIM))
  np.testing.assert_allclose(shared, mab.apply(params, q_b, y, mask), atol=1e-5)
  for b in range(3):  # each set on its own, without padding, against the numpy definition
    n = int(mask[b].sum())
    want = _np_mab(params["params"], np.asarray(q[0]), np.asarray(y[b, :n]), HEADS, mode, ln)
    np.testing.assert_allclose(shared[b], want, atol=1e-5)
  loss = lambda p, queries, keys: jnp.sum(jnp.sin(mab.apply(p, queries, keys, mask)))
  g_shared = jax.grad(loss, argnums=(0, 2))(params, q, y)
  g_direct = jax.grad(loss, argnums=(0, 2))(params, q_b, y)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), g_shared, g_direct)
  with pytest.raises(ValueError, match="batch size"):
    mab.apply(params, _x(8, b=2, n=3, d=DIM), y, mask)


def test_reference_mab_parameter_count_and_torch_init():
  """modules.py: (dQ+1)dV + 2(dK+1)dV + (dV+1)dV, plus 4 dV with LayerNorm; torch init bounds."""
  d_q, d_k, d_v = 3, 5, 16
  x, y = _x(0, n=4, d=d_q), _x(1, n=4, d=d_k)
  count = lambda p: sum(a.size for a in jax.tree.leaves(p))
  want = (d_q + 1) * d_v + 2 * (d_k + 1) * d_v + (d_v + 1) * d_v
  assert count(MAB(d_v, 4).init(jax.random.key(0), x, y)) == want
  assert count(MAB(d_v, 4, ln=True).init(jax.random.key(0), x, y)) == want + 4 * d_v
  p = MAB(d_v, 4).init(jax.random.key(0), x, y)["params"]
  for name, fan_in in [("fc_q", d_q), ("fc_k", d_k), ("fc_v", d_k), ("fc_o", d_v)]:
    for leaf in ("kernel", "bias"):
      w = np.asarray(p[name][leaf])
      assert np.abs(w).max() <= 1 / math.sqrt(fan_in)
      assert np.abs(w).max() > 0.5 / math.sqrt(fan_in)  # U(+-bound), not a narrower init
  m, d = 16, 64
  inds = ISAB(d, 4, num_inds=m).init(jax.random.key(0), _x(0, d=2))["params"]["I"]
  bound = math.sqrt(6 / ((m + 1) * d))  # torch xavier_uniform_ on (1, m, d); Flax's is 3.7x wider
  assert np.abs(inds).max() <= bound and np.abs(inds).max() > 0.9 * bound


class BlockVariantsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*MODES)
  def test_shapes_and_finite(self, mode):
    x = _x(6)
    mask = jnp.arange(N)[None, :] < jnp.array([N, 4])[:, None]
    want = {"sab": (B, N, DIM), "isab": (B, N, DIM), "pma": (B, 2, DIM)}
    for name, block in _blocks(mode).items():
      params = block.init(jax.random.key(0), x, mask)
      out = self.variant(block.apply)(params, x, mask)
      chex.assert_shape(out, want[name])
      chex.assert_tree_all_finite(out)


def test_one_program_serves_every_set_size():
  block = ISAB(DIM, HEADS, num_inds=3)
  x = _x(7, n=16)
  params = block.init(jax.random.key(0), x)
  traces = []

  @jax.jit
  def f(p, x_, m_):
    traces.append(1)
    return block.apply(p, x_, m_)

  for n in (3, 9, 16):
    f(params, x, jnp.broadcast_to(jnp.arange(16)[None, :] < n, (B, 16)))
  assert len(traces) == 1


def test_clear_errors():
  x = _x()
  with pytest.raises(ValueError, match="num_heads"):
    SAB(10, 4).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="mode"):
    SAB(DIM, HEADS, mode="modern").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="mask shape"):
    SAB(DIM, HEADS).init(jax.random.key(0), x, jnp.ones((B, N + 1), bool))
  with pytest.raises(ValueError, match="width"):
    MAB(DIM, HEADS, mode="paper").init(jax.random.key(0), x, x)
