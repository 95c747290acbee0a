"""`classifier`: a back-propagation image classifier (softmax cross-entropy).

Batches: {'image': float32 (B, H, W, C), 'label': int32 (B,)}. `predict` returns logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxrepr.methods.base import Method
from jaxrepr.methods.classifier.model import logits_fn, make_model

PRECISIONS = ("float32", "bfloat16")  # config.precision values this method implements


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(arch="cnn", channels=(32, 64), hidden=(128,), num_classes=10, dropout=0.1)
  )


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean softmax cross-entropy (computed in float32) and accuracy."""
  logits_BxK = logits_BxK.astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B).mean()
  accuracy = (logits_BxK.argmax(-1) == labels_B).mean()
  return loss, accuracy


def build(config: ml_collections.ConfigDict) -> Method:
  model = make_model(config.model, config.precision)

  def init(rng, batch):
    return model.init(rng, batch["image"].astype(jnp.float32), False)["params"]

  def loss(params, batch, rng):
    logits = logits_fn(model, params, batch["image"], rng, train=True)
    value, accuracy = cross_entropy(logits, batch["label"])
    return value, {"accuracy": accuracy}

  def predict(params, batch, rng):
    del rng
    return logits_fn(model, params, batch["image"], None, train=False)

  return Method(init=init, loss=loss, predict=predict)
