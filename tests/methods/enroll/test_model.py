"""The enrollment model: permutation invariance, padding, any embedding dimension, the loss, one
device against eight, and a short fit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrepr import parallel
from jaxrepr.data import embeddings
from jaxrepr.methods import enroll
from jaxrepr.methods.enroll import episodes, features
from tests.core.helpers import load_config

_CTX = ("ctx_emb", "ctx_dist", "ctx_label", "ctx_walks", "ctx_mask")


def _config(**model):
  c = load_config("enroll", "tiny")
  c.model.update(model)
  return c


# one compiled program per table shape and scenario (drawn eagerly, each of its few hundred
# operations would compile on its own)
_generate = jax.jit(episodes.generate, static_argnums=3)


def _episodes(config, n=6, dim=None, seed=0, offset=0):
  spec = config.data.source.copy_and_resolve_references()
  spec.split = "all"
  if dim is not None:
    spec.update(dict(dim=dim, seed=seed))
  src = embeddings.make_source(spec)
  table = episodes.device_table(episodes.make_table(src))
  scn = episodes.scenario_from_config(config.data)
  return _generate(table, jax.random.key(seed), jnp.arange(offset, offset + n), scn)


def _permute(ep, perm):
  out = dict(ep)
  for k in _CTX:
    out[k] = ep[k][:, perm]
  out["ctx_pair"] = ep["ctx_pair"][:, perm][:, :, perm]
  return out


def _pad(ep, extra, fill):
  """Appends `extra` padded context elements whose contents are garbage (`fill`)."""
  out = dict(ep)
  B, K = ep["ctx_mask"].shape
  for k in ("ctx_dist", "ctx_label", "ctx_walks"):
    out[k] = jnp.concatenate([ep[k], jnp.full((B, extra), fill, ep[k].dtype)], axis=1)
  out["ctx_emb"] = jnp.concatenate(
    [ep["ctx_emb"], jnp.full((B, extra, ep["ctx_emb"].shape[2]), fill)], axis=1
  )
  out["ctx_mask"] = jnp.concatenate([ep["ctx_mask"], jnp.zeros((B, extra), bool)], axis=1)
  pair = jnp.full((B, K + extra, K + extra), fill, jnp.float32)
  out["ctx_pair"] = pair.at[:, :K, :K].set(ep["ctx_pair"])
  return out


MODES = [
  ("relational", "concat", "none"),
  ("relational", "extra", "none"),
  ("relational", "concat", "ratio"),
  ("relational", "extra", "ratio"),
  ("relational", "concat", "context"),
  ("raw", "concat", "none"),
  ("raw", "extra", "none"),
]


def _garbage_in_padding(ep, fill):
  out = dict(ep)
  m = ep["ctx_mask"]
  for k in ("ctx_dist", "ctx_label", "ctx_walks"):
    out[k] = jnp.where(m, ep[k], jnp.asarray(fill, ep[k].dtype))
  out["ctx_emb"] = jnp.where(m[:, :, None], ep["ctx_emb"], fill)
  out["ctx_pair"] = jnp.where(m[:, :, None] & m[:, None, :], ep["ctx_pair"], fill)
  return out


def _check_invariances(predict, params, ep, input, probe, scale):
  logit = predict(params, ep)
  chex.assert_shape(logit, (6,))
  chex.assert_tree_all_finite(logit)
  K = ep["ctx_mask"].shape[1]
  assert not np.all(ep["ctx_mask"]), "the test needs episodes with padded context slots"
  perm = np.random.default_rng(1).permutation(K)
  np.testing.assert_allclose(predict(params, _permute(ep, perm)), logit, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    predict(params, _garbage_in_padding(ep, 7.0)), logit, rtol=1e-5, atol=1e-5
  )
  if not (input == "relational" and probe == "extra"):  # element width independent of K
    np.testing.assert_allclose(predict(params, _pad(ep, 3, 7.0)), logit, rtol=1e-5, atol=1e-5)
  x, mask = features.set_elements(ep, input=input, probe=probe, scale=scale)
  assert x.shape[:2] == mask.shape == (6, features.num_elements(K, probe))
  # the logit does depend on the context: changing the distances changes it
  moved = dict(
    ep, ctx_dist=ep["ctx_dist"] * 3.0, ctx_pair=ep["ctx_pair"] * 0.3, ctx_emb=ep["ctx_emb"] * 2.0
  )
  assert np.max(np.abs(predict(params, moved) - logit)) > 1e-4


class ModelTest(parameterized.TestCase):
  @parameterized.parameters(*MODES)
  def test_invariant_to_context_order_and_padding(self, input, probe, scale):
    config = _config(input=input, probe=probe, scale=scale)
    m = enroll.build(config)
    predict = jax.jit(lambda p, e: m.predict(p, e, jax.random.key(0))["logit"])
    _check_invariances(
      predict, m.init(jax.random.key(0), None), _episodes(config), input, probe, scale
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_default_model_with_and_without_jit(self):
    config = _config()
    m = enroll.build(config)
    predict = self.variant(lambda p, e: m.predict(p, e, jax.random.key(0))["logit"])
    _check_invariances(
      predict, m.init(jax.random.key(0), None), _episodes(config), "relational", "concat", "none"
    )

  def test_relational_input_accepts_any_dimension(self):
    config = _config()
    m = enroll.build(config)
    params = m.init(jax.random.key(0), None)
    for dim in (3, 8, 40):
      out = jax.jit(m.predict)(params, _episodes(config, dim=dim, seed=dim), jax.random.key(0))
      chex.assert_shape(out["logit"], (6,))
      chex.assert_tree_all_finite(out["logit"])
    raw = _config(input="raw")
    m_raw = enroll.build(raw)
    with pytest.raises(ValueError, match="input='relational'"):
      m_raw.predict(m_raw.init(jax.random.key(0), None), _episodes(raw, dim=5), None)

  def test_loss_is_the_binary_cross_entropy(self):
    config = _config()
    m = enroll.build(config)
    params = m.init(jax.random.key(0), None)
    batch = {"example_id": jnp.arange(16, dtype=jnp.int32)}
    loss, metrics = jax.jit(m.loss)(params, batch, jax.random.key(0))
    out = jax.jit(m.predict)(params, batch, None)
    y = np.asarray(out["label"], np.float64)
    p = 1 / (1 + np.exp(-np.asarray(out["logit"], np.float64)))
    np.testing.assert_allclose(loss, -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean((p > 0.5) == (y == 1)), rtol=1e-6)


def test_clear_errors():
  for field, value in (("input", "pixels"), ("probe", "both"), ("encoder", "lstm")):
    with pytest.raises(ValueError, match=f"config.model.{field}"):
      enroll.build(_config(**{field: value}))
  bad = _config()
  bad.data.n_id_range = (2, 100)
  with pytest.raises(ValueError, match="usable identities"):
    enroll.build(bad)
  m = enroll.build(_config())
  with pytest.raises(ValueError, match="example_id"):
    m.loss(m.init(jax.random.key(0), None), {"x": jnp.zeros(2)}, None)


def test_eight_devices_give_the_one_device_loss():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  m = enroll.build(_config())
  params = m.init(jax.random.key(0), None)
  batch = {"example_id": jnp.arange(32, 48, dtype=jnp.int32)}
  loss_one = jax.jit(m.loss)(params, batch, jax.random.key(1))[0]
  mesh = parallel.make_mesh(8)  # the trainer's mesh
  with jax.set_mesh(mesh):
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    loss_eight = jax.jit(m.loss)(params, sharded, jax.random.key(1))[0]
  np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-5)


@pytest.mark.heavy
def test_short_training_beats_chance_on_held_out_identities():
  config = load_config("enroll")
  config.data.source.update(dict(dim=16, kappa=30.0, num_identities=200, samples_per_identity=8))
  config.data.update(dict(n_id_range=(3, 20), walks_range=(1, 4), context_size=8))
  config.model.update(dict(dim_hidden=32, num_blocks=1))
  m = enroll.build(config)
  params = m.init(jax.random.key(0), None)
  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state, k):
    ids = {"example_id": k * 64 + jnp.arange(64, dtype=jnp.int32)}
    grads = jax.grad(lambda p: m.loss(p, ids, None)[0])(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for k in range(150):
    params, state = step(params, state, k)
  held_out = config.data.source.copy_and_resolve_references()
  held_out.split = "test"
  table = episodes.device_table(episodes.make_table(embeddings.make_source(held_out)))
  ep = episodes.generate(
    table,
    jax.random.key(9),
    jnp.arange(1024),
    episodes.scenario_from_config(config.data, n_id_range=(3, 20)),
  )
  logit = np.asarray(jax.jit(m.predict)(params, ep, None)["logit"])
  accuracy = np.mean((logit > 0) == (np.asarray(ep["label"]) == 1))
  assert accuracy > 0.75, accuracy
