"""The one-network back-prop reference (`model.variant='cnn'`, configs/noprop.py:classifier).

NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1) compares its blocks with a back-propagated chain
of the same blocks (the 'backprop' variant). This is the simpler reference beside it: one CNN built
from the paper's Figure 6 parts, trained end to end with cross-entropy, so that a table can show how
far a plain network of the same widths gets on the same data and budget.

  image x: Figure 6's image branch exactly, as the CT/FM network has it (`model.ImageEncoder` with
           final='relu'): conv32 -> ReLU -> maxpool 2x2 -> dropout -> conv64 -> ReLU -> dropout ->
           conv128 -> ReLU -> maxpool 2x2 -> dropout -> flatten -> FC256 -> ReLU (two pools: 7x7x128
           on 28x28 inputs, 2x2x128 on 8x8 digits);
  head:    Figure 6's CT/FM head without the z and t branches:
           FC256 -> ReLU -> FC128 -> ReLU -> FC m.
The CT/FM form (ReLU, no batch norm) rather than the DT block's (batch norm after FC256) keeps every
prediction a function of its own example, with no batch statistics to choose at evaluation.
Params: {'net': ...}; predict returns {'logits', 'label'} like the NoProp predictors.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.methods.noprop import model as model_lib
from jaxrepr.methods.noprop.loss import Spec, check_batch, cross_entropy


class Figure6CNN(nn.Module):
  """Figure 6 image branch (CT/FM form) -> FC hidden -> ReLU -> FC head_hidden -> ReLU -> FC m."""

  num_classes: int
  conv_features: Sequence[int] = (32, 64, 128)
  hidden: int = 256
  head_hidden: int = 128
  dropout: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
    h_BxF = model_lib.ImageEncoder(
      self.conv_features, self.hidden, self.dropout, "none", "relu", self.dtype
    )(x_BxHxWxC, train=train)
    h_BxF = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h_BxF))
    h_BxF = nn.relu(nn.Dense(self.head_hidden, dtype=self.dtype)(h_BxF))
    return nn.Dense(self.num_classes, dtype=self.dtype)(h_BxF).astype(jnp.float32)


def network(spec: Spec) -> Figure6CNN:
  return Figure6CNN(
    spec.num_classes,
    spec.conv_features,
    spec.hidden,
    spec.head_hidden,
    spec.dropout,
    spec.compute_dtype(),
  )


def init(spec: Spec, rng: jax.Array, x_BxHxWxC: jax.Array) -> dict:
  return {"net": network(spec).init(rng, x_BxHxWxC, train=False)["params"]}


def cnn_loss(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  check_batch(batch)
  logits_BxM = network(spec).apply(
    {"params": params["net"]}, batch["image"], train=True, rngs={"dropout": rng}
  )
  ce, acc = cross_entropy(logits_BxM, batch["label"])
  return ce, {"ce": ce, "accuracy": acc}


def cnn_predict(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> dict[str, jax.Array]:
  del rng  # deterministic: no dropout at evaluation
  check_batch(batch)
  logits_BxM = network(spec).apply({"params": params["net"]}, batch["image"], train=False)
  return {"logits": logits_BxM, "label": jnp.argmax(logits_BxM, axis=-1).astype(jnp.int32)}
