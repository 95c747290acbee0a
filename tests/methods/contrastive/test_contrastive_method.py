"""The `contrastive` method: shapes and finiteness of every objective, the loss over the global
batch (the same on 1 and 8 devices, so each row's negatives come from every device), the logit-scale
flags through `build`, and the config errors."""

import math

import chex
import jax
import numpy as np
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrepr import config as config_lib, parallel
from jaxrepr.methods import contrastive
from jaxrepr.methods.contrastive import loss as L


def _config(objective="symile", modalities=("a", "b", "c"), **model):
  config = config_lib.base_config()
  config.method = "contrastive"
  config.model = contrastive.default_model_config()
  config.model.update(dict(objective=objective, modalities=modalities, dim=8, **model))
  return config


def _batch(n=16, modalities=("a", "b", "c"), width=5, seed=0):
  rng = np.random.default_rng(seed)
  return {m: rng.integers(0, 2, (n, width)).astype(np.float32) for m in modalities}


CASES = [
  ("symile", ("a", "b", "c"), {"negative_sampling": "n"}),
  ("symile", ("a", "b", "c"), {"negative_sampling": "n_squared"}),
  ("symile", ("a", "b"), {}),
  ("clip", ("a", "b", "c"), {}),
  ("clip", ("a", "b"), {"encoder": "mlp", "hidden": (16,)}),
  ("convirt", ("a", "b"), {"normalize": "layernorm"}),
]


class ShapesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*CASES)
  def test_loss_predict_and_embed_shapes(self, objective, modalities, model):
    method = contrastive.build(_config(objective, modalities, **model))
    batch = _batch(modalities=modalities)
    params = method.init(jax.random.key(0), batch)
    value, metrics = self.variant(method.loss)(params, batch, jax.random.key(1))
    chex.assert_shape(value, ())
    assert np.isfinite(value) and value >= 0
    assert math.isclose(float(metrics["log_batch"]), math.log(16), rel_tol=1e-6)
    out = self.variant(method.predict)(params, batch, jax.random.key(1))
    for m in modalities:
      chex.assert_shape(out["reps"][m], (16, 8))
    chex.assert_shape(self.variant(method.embed)(params, batch), (16, 8 * len(modalities)))
    only_b = method.predict(params, {"b": batch["b"][:3]}, None)
    assert set(only_b["reps"]) == {"b"}
    np.testing.assert_allclose(only_b["reps"]["b"], out["reps"]["b"][:3], rtol=1e-5, atol=1e-6)


def test_l2_encoders_give_unit_vectors_and_the_clip_flag_clips_through_build():
  config = _config("clip", ("a", "b"), logit_scale_init=math.log(1000.0), max_logit_scale=100.0)
  method = contrastive.build(config)
  batch = _batch(modalities=("a", "b"))
  params = method.init(jax.random.key(0), batch)
  value, metrics = method.loss(params, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["logit_scale"], 100.0, rtol=1e-6)
  reps = method.predict(params, batch, None)["reps"]
  np.testing.assert_allclose(np.linalg.norm(reps["a"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(value, L.infonce(reps["a"], reps["b"], 100.0), rtol=1e-5)
  grads = jax.grad(lambda p: method.loss(p, batch, None)[0])(params)
  assert float(grads["logit_scale"]) == 0.0  # clipped: no gradient on t
  config.model.max_logit_scale = 0.0  # unclipped, as the Symile reference code
  _, metrics = contrastive.build(config).loss(params, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["logit_scale"], 1000.0, rtol=1e-4)
  assert contrastive.default_model_config().logit_scale_init == L.CLIP_LOGIT_SCALE_INIT


def test_frozen_logit_scale_gets_no_gradient_and_convirt_uses_its_tau():
  batch = _batch(modalities=("a", "b"))
  frozen = contrastive.build(_config("clip", ("a", "b"), learn_logit_scale=False))
  params = frozen.init(jax.random.key(0), batch)
  grads = jax.grad(lambda p: frozen.loss(p, batch, None)[0])(params)
  assert float(grads["logit_scale"]) == 0.0
  learned = contrastive.build(_config("clip", ("a", "b")))
  assert float(jax.grad(lambda p: learned.loss(p, batch, None)[0])(params)["logit_scale"]) != 0.0
  convirt = contrastive.build(_config("convirt", ("a", "b"), convirt_tau=0.2, convirt_lambda=0.9))
  value, _ = convirt.loss(params, batch, None)
  reps = convirt.predict(params, batch, None)["reps"]
  np.testing.assert_allclose(value, L.convirt(reps["a"], reps["b"], 0.2, 0.9), rtol=1e-5)


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("objective", "simclr", "config.model.objective"),
    ("negative_sampling", "n_cubed", "config.model.negative_sampling"),
    ("pairwise_reduce", "max", "config.model.pairwise_reduce"),
    ("encoder", "vit", "config.model.encoder"),
    ("normalize", "batchnorm", "config.model.normalize"),
  ],
)
def test_bad_model_fields_are_named(field, value, match):
  with pytest.raises(ValueError, match=match):
    contrastive.build(_config(**{field: value}))
  with pytest.raises(ValueError, match="ConVIRT contrasts two modalities"):
    contrastive.build(_config("convirt"))


@pytest.mark.parametrize(
  "objective,model",
  [
    ("symile", {"negative_sampling": "n"}),
    ("symile", {"negative_sampling": "n_squared"}),
    ("clip", {}),
  ],
)
def test_loss_over_the_global_batch_is_the_same_on_one_and_eight_devices(objective, model):
  """The batch arrives sharded over the mesh's data axis; the loss, written on the global arrays,
  contrasts every row with the rows of every device. A per-device loss (negatives from the local
  shard only) gives a different number."""
  method = contrastive.build(_config(objective, **model))
  batch = _batch(n=32, seed=3)
  params = method.init(jax.random.key(0), batch)
  values = {}
  for devices in (1, 8):
    mesh = parallel.make_mesh(devices)
    sharded = parallel.to_global(batch, mesh)
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
      f = jax.jit(jax.value_and_grad(lambda p, b, k: method.loss(p, b, k)[0]))
      values[devices] = f(replicated, sharded, jax.random.key(4))
    if devices == 8:
      assert len(sharded["a"].sharding.device_set) == 8
  np.testing.assert_allclose(values[8][0], values[1][0], rtol=1e-6)
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), values[8][1], values[1][1]
  )
  # the per-device (local negatives) loss is another number: the test can tell them apart
  local = np.mean(
    [
      float(method.loss(params, {k: v[i : i + 4] for k, v in batch.items()}, jax.random.key(4))[0])
      for i in range(0, 32, 4)
    ]
  )
  assert abs(local - float(values[1][0])) > 0.1
