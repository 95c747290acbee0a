"""NoProp initialisation and the back-prop references.

* The back-prop chain's classifier starts at W_Embed^T (the identity for one-hot labels), so the
  corner u_c of the simplex z_T starts near scores class c highest; `chain_head_init='random'`
  keeps Flax's init.
* Prototype embeddings are the training split's per-class prototypes (NoProp §2.2.1), handed to the
  method by the data module through the training batches, not picked from the init batch.
* The `:classifier` reference is one CNN of Figure 6's image branch (two max-pools) and head.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from jaxrepr import train
from jaxrepr.data import images
from jaxrepr.methods import noprop
from jaxrepr.methods.noprop import model as model_lib
from tests.core.helpers import load_config

TINY = dict(conv_features=(4, 4, 4), hidden=8, head_hidden=8, num_blocks=2, inference_steps=2)


def _config(variant="dt", **kw):
  mc = noprop.default_model_config(variant)
  mc.update({**TINY, **kw})
  return ml_collections.ConfigDict({"model": mc, "precision": "float32"})


@functools.cache
def _digits_train():
  return images.load(images.default_config("digits"), "train")


def _batch(n=16):
  d = _digits_train()
  return {"image": jnp.asarray(d["image"][:n]), "label": jnp.asarray(d["label"][:n])}


# ------------------------------------------------------------------------------ the chain's head
@pytest.mark.parametrize("embedding", ["onehot", "learned", "prototype"])
def test_chain_head_starts_at_the_transposed_embedding(embedding):
  config = _config("backprop", embedding=embedding)
  spec = noprop.make_spec(config.model)
  batch = _batch()
  if embedding == "prototype":  # the training-set prototypes, as configs/noprop.py hands them over
    d = _digits_train()
    batch["class_prototype"] = jnp.asarray(
      images.class_prototypes(d["image"], d["label"])[np.arange(16) % 10]
    )
  params = jax.jit(noprop.build(config).init)(jax.random.key(0), batch)
  w_MxD = model_lib.embedding_matrix(params, 10)
  if embedding == "onehot":
    np.testing.assert_array_equal(w_MxD, np.eye(10))
  np.testing.assert_array_equal(params["classifier"]["kernel"], np.asarray(w_MxD).T)
  np.testing.assert_array_equal(params["classifier"]["bias"], np.zeros(10))
  # The classifier the chain applies to z_T scores each class's own corner highest (for
  # prototypes an inner product, so this holds for digits' prototypes, not for any images).
  logits_MxM = spec.classifier().apply({"params": params["classifier"]}, w_MxD)
  np.testing.assert_array_equal(np.argmax(logits_MxM, axis=-1), np.arange(10))


def test_chain_head_random_init_is_the_old_one():
  config = _config("backprop", chain_head_init="random")
  params = jax.jit(noprop.build(config).init)(jax.random.key(0), _batch())
  kernel = np.asarray(params["classifier"]["kernel"])
  assert kernel.shape == (10, 10) and not np.allclose(kernel, np.eye(10))
  assert 0.1 < np.std(kernel) < 0.6  # LeCun normal: std 1/sqrt(10)
  with pytest.raises(ValueError, match="chain_head_init"):
    noprop.build(_config("backprop", chain_head_init="identity"))


# ------------------------------------------------------------------- prototypes from the train set
def test_data_and_method_pick_the_same_prototypes():
  """The data module's numpy rule and the method's own (for batches without a table) agree."""
  d = _digits_train()
  table = images.class_prototypes(d["image"], d["label"], chunk=100)  # several chunks per class
  want = model_lib.prototypes(jnp.asarray(d["image"]), jnp.asarray(d["label"]), 10)
  np.testing.assert_array_equal(table.reshape(10, -1), np.asarray(want))
  x = np.array([0.0, 1.0, 10.0, 9.0, 9.5, 20.0], np.float32).reshape(6, 1, 1, 1)
  labels = np.array([0, 0, 0, 1, 1, 2])
  # Class 0, median distance to the two others: 0 -> 5.5, 1 -> 5.0, 10 -> 9.5 (counting an image's
  # zero distance to itself would pick 0). Class 1: a tie, the first. Class 2: alone.
  np.testing.assert_array_equal(images.class_prototypes(x, labels)[:, 0, 0, 0], [1.0, 9.0, 20.0])
  np.testing.assert_array_equal(
    model_lib.prototypes(jnp.asarray(x), jnp.asarray(labels), 2)[:, 0], [1.0, 9.0]
  )


def test_training_batches_carry_the_prototype_table():
  cfg = images.default_config("digits")
  cfg.class_prototypes = True
  d = _digits_train()
  table = images.class_prototypes(d["image"], d["label"])
  for shard_index in (0, 1):
    it = images.train_iterator(cfg, batch_size=32, seed=0, shard_index=shard_index, shard_count=2)
    state = it.get_state()
    first = next(it)
    rows = np.arange(16) + 16 * shard_index
    np.testing.assert_array_equal(first["class_prototype"], table[rows % 10])
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["image"], first["image"])
  plain = next(images.train_iterator(images.default_config("digits"), batch_size=32, seed=0))
  assert "class_prototype" not in plain


def test_prototype_embedding_comes_from_the_whole_training_split():
  """Through the trainer's own build: config -> data iterator -> init on its first batch."""
  config = load_config("noprop", "dt,prototype,tiny")
  config.num_devices = 1
  assert config.data.class_prototypes
  run = train.build(config)
  d = _digits_train()
  want = images.class_prototypes(d["image"], d["label"]).reshape(10, -1)
  np.testing.assert_array_equal(np.asarray(run.state.params["embed"]), want)
  # The init batch alone (16 images) would have given other images.
  first = run.next_batch()
  from_batch = model_lib.prototypes(first["image"], first["label"], 10)
  assert not np.array_equal(np.asarray(from_batch), want)


def test_a_short_prototype_table_is_an_error():
  batch = dict(_batch(), class_prototype=_batch(4)["image"])
  with pytest.raises(ValueError, match="class_prototype"):
    noprop.build(_config("dt", embedding="prototype")).init(jax.random.key(0), batch)


# ----------------------------------------------------------------------- the one-network reference
def test_classifier_variant_is_figure_6s_image_branch_and_head():
  config = load_config("noprop", "classifier,mnist5k")
  assert (config.method, config.model.variant, config.evals.test.kind) == (
    "noprop",
    "cnn",
    "noprop",
  )
  method = noprop.build(config)
  batch = {"image": jnp.zeros((2, 28, 28, 1)), "label": jnp.zeros((2,), jnp.int32)}
  shapes = jax.tree.map(lambda p: p.shape, jax.eval_shape(method.init, jax.random.key(0), batch))
  # Two 2x2 max-pools (after the first and the last conv): 28 -> 14 -> 7, so 7 * 7 * 128 features.
  assert shapes == {
    "net": {
      "ImageEncoder_0": {
        "Conv_0": {"kernel": (3, 3, 1, 32), "bias": (32,)},
        "Conv_1": {"kernel": (3, 3, 32, 64), "bias": (64,)},
        "Conv_2": {"kernel": (3, 3, 64, 128), "bias": (128,)},
        "Dense_0": {"kernel": (7 * 7 * 128, 256), "bias": (256,)},
      },
      "Dense_0": {"kernel": (256, 256), "bias": (256,)},
      "Dense_1": {"kernel": (256, 128), "bias": (128,)},
      "Dense_2": {"kernel": (128, 10), "bias": (10,)},
    }
  }
  with pytest.raises(ValueError, match="takes no label embedding"):
    noprop.build(_config("cnn", embedding="learned"))


class CNNShapesTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_and_predict_are_finite(self):
    method = noprop.build(_config("cnn"))
    batch = _batch(8)
    params = jax.jit(method.init)(jax.random.key(0), batch)
    loss, metrics = self.variant(method.loss)(params, batch, jax.random.key(1))
    out = self.variant(method.predict)(params, dict(batch, mask=jnp.ones((8,))), jax.random.key(2))
    chex.assert_shape(loss, ())
    chex.assert_shape(out["logits"], (8, 10))
    chex.assert_shape(out["label"], (8,))
    chex.assert_tree_all_finite((loss, metrics, out))
    # Dropout in training: two keys, two losses; none in predict.
    assert float(method.loss(params, batch, jax.random.key(3))[0]) != float(loss)
