"""Tests of NoProp: block locality, schedules against their closed forms, shapes, a short DT
training."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from jaxrepr.data import images
from jaxrepr.methods import noprop
from jaxrepr.methods.noprop import inference, loss as loss_lib, model as model_lib, schedules

TINY = dict(conv_features=(4, 4, 4), hidden=8, head_hidden=8, num_blocks=3, inference_steps=2)


def _config(variant="dt", **kw):
  mc = noprop.default_model_config(variant)
  mc.update({**TINY, **kw})
  return ml_collections.ConfigDict({"model": mc, "precision": "float32"})


@functools.cache
def _digits(n=8):
  d = images.load(images.default_config("digits"), "train")
  return {"image": jnp.asarray(d["image"][:n]), "label": jnp.asarray(d["label"][:n])}


# ------------------------------------------------------------------------------------- schedules
def test_dt_coefficients_match_the_closed_form_in_float64():
  T = 10
  s = schedules.discrete_schedule(T)
  abar = s.abar
  assert abar.dtype == np.float64 and np.all(np.diff(abar) > 0) and abar[-1] < 1.0
  for t in range(1, T + 1):
    alpha_prev = abar[t - 1] / abar[t]  # abar_t = prod_{s >= t} alpha_s (App. A)
    a = np.sqrt(abar[t]) * (1 - alpha_prev) / (1 - abar[t - 1])
    b = np.sqrt(alpha_prev) * (1 - abar[t]) / (1 - abar[t - 1])
    c = (1 - abar[t]) * (1 - alpha_prev) / (1 - abar[t - 1])
    np.testing.assert_allclose([s.a[t], s.b[t], s.c[t]], [a, b, c], rtol=1e-12)
    snr = lambda v: v / (1 - v)
    np.testing.assert_allclose(s.a[t] ** 2 / s.c[t], snr(abar[t]) - snr(abar[t - 1]), rtol=1e-9)
    np.testing.assert_allclose(s.weight[t], snr(abar[t]) - snr(abar[t - 1]), rtol=1e-12)
    # One posterior step maps q(z_{t-1}|y) onto q(z_t|y): mean and variance.
    np.testing.assert_allclose(s.a[t] + s.b[t] * np.sqrt(abar[t - 1]), np.sqrt(abar[t]), rtol=1e-12)
    np.testing.assert_allclose(s.b[t] ** 2 * (1 - abar[t - 1]) + s.c[t], 1 - abar[t], rtol=1e-12)
  # The cosine form itself, recomputed here.
  tau = 1 - np.arange(T + 1) / T
  f = np.cos(np.pi / 2 * (tau + 0.008) / 1.008) ** 2 / np.cos(np.pi / 2 * 0.008 / 1.008) ** 2
  np.testing.assert_allclose(abar, np.clip(f, 1e-4, 0.99), rtol=1e-12)


def test_kl_closed_form_matches_monte_carlo():
  rng = np.random.default_rng(0)
  d, abar0 = 5, 0.3
  u = rng.normal(size=d)
  z = np.sqrt(abar0) * u + np.sqrt(1 - abar0) * rng.normal(size=(400_000, d))
  log_q = -0.5 * np.sum((z - np.sqrt(abar0) * u) ** 2, -1) / (1 - abar0) - 0.5 * d * np.log(
    1 - abar0
  )
  log_p = -0.5 * np.sum(z**2, -1)
  closed = float(schedules.kl_to_prior(jnp.asarray(u[None], jnp.float32), jnp.float32(abar0))[0])
  assert closed == pytest.approx(np.mean(log_q - log_p), rel=2e-2)


def test_ct_snr_is_monotone_for_any_weights():
  net = schedules.GammaNetwork(hidden=16)
  t = jnp.linspace(0.0, 1.0, 201)
  params = net.init(jax.random.key(0), t)["params"]
  for seed in range(3):  # arbitrary (also negative) raw weights and endpoints
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = jax.tree.unflatten(
      tree, [l + 3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
    )
    snr = schedules.ct_snr(net.apply({"params": noisy}, t))
    assert bool(jnp.all(jnp.diff(snr) > 0)), seed
  snr0, snr1 = schedules.ct_snr(net.apply({"params": params}, jnp.array([0.0, 1.0])))
  assert float(snr0) == pytest.approx(np.exp(-7.0), rel=1e-4)
  assert float(snr1) == pytest.approx(np.exp(7.0), rel=1e-4)


def test_fm_euler_on_the_exact_field_lands_on_the_label():
  u = jax.random.normal(jax.random.key(0), (4, 3))
  z0 = jax.random.normal(jax.random.key(1), (4, 3))
  for steps, solver in ((1, "euler"), (7, "euler"), (3, "heun")):
    z1 = inference.integrate(lambda z, t: u - z0, z0, steps, solver)
    np.testing.assert_allclose(z1, u, atol=1e-5)
  t = jnp.full((4,), 0.3)
  zt = schedules.fm_interpolate(u, z0, t, jnp.zeros_like(u), sigma=0.0)
  np.testing.assert_allclose(zt + (1 - t)[:, None] * (u - z0), u, atol=1e-6)  # ztilde_1 (Eq. 13)


def test_prototypes_pick_the_class_medoid():
  x = jnp.array([0.0, 1.0, 1.1, 5.0, 9.0, 9.5, 20.0]).reshape(7, 1, 1, 1)
  labels = jnp.array([0, 0, 0, 0, 1, 1, 1])
  protos = model_lib.prototypes(x, labels, 3)
  # class 0 medians: 0->1.1, 1->1.0, 1.1->1.1, 5->4.0;
  # class 1 medians: 9->5.75, 9.5->5.25, 20->10.75
  np.testing.assert_allclose(protos[:2, 0], [1.0, 9.5])
  assert protos.shape == (3, 1)  # class 2 absent: falls back to the overall medoid


# ------------------------------------------------------------------------------- block locality
@functools.cache
def _dt(embedding="learned", **kw):
  method = noprop.build(_config("dt", embedding=embedding, **kw))
  spec = noprop.make_spec(_config("dt", embedding=embedding, **kw).model)
  params = jax.jit(method.init)(jax.random.key(0), _digits())
  return method, spec, params


def test_no_gradient_crosses_blocks():
  _, spec, params = _dt()
  batch = _digits()
  grad_fn = jax.jit(
    jax.grad(lambda p, t: loss_lib.dt_block_term(spec, p, batch, jax.random.key(1), t))
  )
  for t in (1, 3):
    grads = grad_fn(params, jnp.int32(t))
    for leaf in jax.tree.leaves(grads["blocks"]):
      others = np.delete(np.asarray(leaf), t - 1, axis=0)
      assert np.all(others == 0.0)
    assert any(np.any(np.asarray(l)[t - 1] != 0) for l in jax.tree.leaves(grads["blocks"]))
    assert np.any(np.asarray(grads["embed"]) != 0)  # W_Embed is shared and trained by every block


def test_one_block_per_step_computes_only_that_block():
  method_all, _, params = _dt()
  method_one = noprop.build(
    _config("dt", embedding="learned", block_schedule="fixed", block_index=2)
  )
  batch, rng = _digits(), jax.random.key(5)
  _, m_all = jax.jit(method_all.loss)(params, batch, rng)
  # Poison every other block: a one-block step that touched them would turn NaN.
  poisoned = dict(
    params, blocks=jax.tree.map(lambda p: p.at[jnp.array([0, 2])].set(jnp.nan), params["blocks"])
  )
  (loss_one, m_one), grads = jax.jit(jax.value_and_grad(method_one.loss, has_aux=True))(
    poisoned, batch, rng
  )
  np.testing.assert_allclose(m_one["denoise"], m_all["denoise_t2"], rtol=1e-5)
  np.testing.assert_allclose(m_one["ce"], m_all["ce"], rtol=1e-6)
  assert np.isfinite(float(loss_one))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match="block_index"):
    noprop.build(_config("dt", block_schedule="fixed"))


def test_params_hold_exactly_what_each_variant_uses():
  batch = _digits()
  want = {
    "dt": {"blocks", "classifier"},
    "backprop": {"blocks", "mix", "classifier"},
    "ct": {"net", "schedule", "classifier"},
    "fm": {"net"},
  }
  for variant, keys in want.items():
    for embedding, extra in (("onehot", set()), ("learned", {"embed", "classifier"})):
      params = jax.eval_shape(
        noprop.build(_config(variant, embedding=embedding)).init, jax.random.key(0), batch
      )
      assert set(params) == keys | extra, (variant, embedding, sorted(params))
  params = jax.eval_shape(noprop.build(_config("cnn")).init, jax.random.key(0), batch)
  assert set(params) == {"net"}


def test_classifier_starts_at_zero_for_noprop_and_not_for_the_chain():
  """The chain's head starts at W_Embed^T (test_noprop_init.py): a zero head would pass no
  gradient to its blocks."""
  batch = _digits()
  for variant, zero in (("dt", True), ("ct", True), ("backprop", False)):
    params = jax.jit(noprop.build(_config(variant)).init)(jax.random.key(0), batch)
    assert bool(np.all(np.asarray(params["classifier"]["kernel"]) == 0)) == zero, variant


def test_backprop_chain_equals_a_hand_written_recurrence():
  spec = noprop.make_spec(_config("backprop", embedding="learned").model)
  method = noprop.build(_config("backprop", embedding="learned"))
  batch, rng = _digits(), jax.random.key(4)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  params = dict(params, mix=jnp.asarray([0.3, -0.2, 1.1]))  # distinct alphas, one negative
  got = loss_lib.chain_logits(spec, params, batch, rng, train=False)
  w = np.asarray(params["embed"], np.float64)
  k_z0, _ = jax.random.split(rng)
  z = np.asarray(jax.random.normal(k_z0, (8, w.shape[1])), np.float64)
  block = spec.block(batch["image"].shape[1:])
  for t in range(3):
    p_t = jax.tree.map(lambda p, t=t: p[t], params["blocks"])
    logits = np.asarray(
      block.apply({"params": p_t}, jnp.asarray(z, jnp.float32), batch["image"], train=False),
      np.float64,
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    alpha = np.tanh(float(params["mix"][t]))
    z = (1 - alpha) * z + alpha * probs @ w
  c = params["classifier"]
  want = z @ np.asarray(c["kernel"], np.float64) + np.asarray(c["bias"], np.float64)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_backprop_baseline_chains_the_blocks_end_to_end():
  method = noprop.build(_config("backprop"))
  batch, rng = _digits(), jax.random.key(1)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  np.testing.assert_allclose(np.tanh(params["mix"]), 0.5, rtol=1e-6)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(method.loss, has_aux=True))(
    params, batch, rng
  )
  assert np.isfinite(float(loss)) and set(metrics) >= {"ce", "accuracy"}
  # Unlike NoProp, the end-to-end loss reaches every block (and the mixing weights).
  for leaf in jax.tree.leaves(grads["blocks"]):
    assert all(np.any(np.asarray(leaf)[t] != 0) for t in range(3))
  assert np.all(np.asarray(grads["mix"]) != 0)
  out = jax.jit(method.predict)(params, dict(batch, mask=jnp.ones((8,))), jax.random.key(2))
  chex.assert_shape(out["logits"], (8, 10))
  with pytest.raises(ValueError, match="block_schedule"):
    noprop.build(_config("backprop", block_schedule="sampled"))


# ------------------------------------------------------------------------------ shapes and errors
def _check_outputs(params, loss, metrics, out, variant, embedding):
  d = {"onehot": 10, "learned": 20, "prototype": 64}[embedding]
  if "embed" in params:
    chex.assert_shape(params["embed"], (10, d))
  if variant in ("dt", "backprop"):
    chex.assert_tree_shape_prefix(params["blocks"], (2,))
  chex.assert_shape(loss, ())
  chex.assert_tree_all_finite((loss, metrics))
  chex.assert_shape(out["logits"], (8, 10))
  chex.assert_shape(out["label"], (8,))
  chex.assert_tree_all_finite(out)


class ShapesTest(parameterized.TestCase):
  """Every variant under jit and without jit (learned embedding: the case with the most parts)."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("dt", "ct", "fm", "backprop")
  def test_loss_and_predict_are_finite(self, variant):
    method = noprop.build(_config(variant, embedding="learned", num_blocks=2))
    batch = _digits()
    params = jax.jit(method.init)(jax.random.key(0), batch)
    loss, metrics = self.variant(method.loss)(params, batch, jax.random.key(1))
    out = self.variant(method.predict)(params, dict(batch, mask=jnp.ones((8,))), jax.random.key(2))
    _check_outputs(params, loss, metrics, out, variant, "learned")


@pytest.mark.parametrize("variant", ["dt", "ct", "fm", "backprop"])
@pytest.mark.parametrize("embedding", ["onehot", "prototype"])
def test_each_embedding_is_finite(variant, embedding):
  method = noprop.build(_config(variant, embedding=embedding, num_blocks=2))
  batch = _digits()

  @jax.jit
  def run(batch):  # one compile for init, loss and predict
    params = method.init(jax.random.key(0), batch)
    loss, metrics = method.loss(params, batch, jax.random.key(1))
    return (
      params,
      loss,
      metrics,
      method.predict(params, dict(batch, mask=jnp.ones((8,))), jax.random.key(2)),
    )

  _check_outputs(*run(batch), variant, embedding)


@pytest.mark.parametrize("variant", ["dt", "ct", "fm", "backprop"])
def test_bfloat16_predict_is_float32_and_close_to_float32(variant):
  """config.precision='bfloat16' in inference: the same float32 params, float32 logits out, and
  logits within bf16 rounding of the float32 ones (the loss side is
  tests/core/test_precision.py)."""
  batch = dict(_digits(), mask=jnp.ones((8,)))
  methods = {}
  for precision in ("float32", "bfloat16"):
    config = _config(variant, num_blocks=2)
    config.precision = precision
    methods[precision] = noprop.build(config)
  params = jax.jit(methods["float32"].init)(jax.random.key(0), batch)
  if "classifier" in params:  # zero-initialised for DT/CT: make the logits depend on z
    kernel = params["classifier"]["kernel"]
    params["classifier"]["kernel"] = jax.random.normal(jax.random.key(3), kernel.shape)
  out = {p: jax.jit(m.predict)(params, batch, jax.random.key(2)) for p, m in methods.items()}
  hlo = jax.jit(methods["bfloat16"].predict).lower(params, batch, jax.random.key(2)).as_text()
  assert "bf16" in hlo
  for p in out:
    assert out[p]["logits"].dtype == jnp.float32
  f32, bf16 = out["float32"]["logits"], out["bfloat16"]["logits"]
  assert not np.array_equal(f32, bf16)
  np.testing.assert_allclose(bf16, f32, atol=0.05 * float(jnp.max(jnp.abs(f32))) + 1e-3)


def test_bad_config_and_batch_raise_clear_errors():
  with pytest.raises(ValueError, match="embedding"):
    noprop.build(_config("dt", embedding="random"))
  with pytest.raises(ValueError, match="solver"):
    noprop.build(_config("fm", solver="rk4"))
  with pytest.raises(ValueError, match="variant"):
    noprop.build(_config("diffusion"))
  with pytest.raises(ValueError, match="config.precision='float16'"):
    config = _config("dt")
    config.precision = "float16"
    noprop.build(config)
  method = noprop.build(_config("dt"))
  with pytest.raises(KeyError, match="label"):
    method.init(jax.random.key(0), {"image": _digits()["image"]})


# ---------------------------------------------------------------------------- a short training run
@pytest.mark.heavy
def test_short_dt_training_on_digits_beats_chance():
  cfg = images.default_config("digits")
  test = images.load(cfg, "test")
  config = _config(
    "dt",
    conv_features=(8, 16, 16),
    hidden=32,
    head_hidden=32,
    num_blocks=4,
    dropout=0.0,
    deterministic=True,
  )
  method = noprop.build(config)
  it = images.train_iterator(cfg, batch_size=64, seed=0)
  params = jax.jit(method.init)(jax.random.key(0), next(it))
  opt = optax.adamw(3e-3, weight_decay=1e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state, batch, rng):
    (loss, _), grads = jax.value_and_grad(method.loss, has_aux=True)(params, batch, rng)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  for k in range(200):
    params, state, loss = step(params, state, next(it), jax.random.fold_in(jax.random.key(1), k))
  assert np.isfinite(float(loss))
  out = jax.jit(method.predict)(
    params, {k: jnp.asarray(v) for k, v in test.items()}, jax.random.key(2)
  )
  accuracy = float(np.mean(np.asarray(out["label"]) == test["label"]))
  assert accuracy > 0.6, accuracy  # chance is 0.1
