"""Back-propagation image classifiers: an MLP and a small CNN (conv -> pool blocks -> MLP head).

NoProp's back-prop baseline and the distillation teachers/students are instances of these.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  hidden: Sequence[int]
  num_classes: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    h_BxD = x_BxHxWxC.reshape((x_BxHxWxC.shape[0], -1))
    for width in self.hidden:
      h_BxD = nn.relu(nn.Dense(width)(h_BxD))
      h_BxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxD)
    return nn.Dense(self.num_classes)(h_BxD)


class CNN(nn.Module):
  """3x3 conv blocks (each followed by 2x2 max-pooling while the map is larger than 2x2)."""

  channels: Sequence[int]
  hidden: Sequence[int]
  num_classes: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool) -> jax.Array:
    h = x_BxHxWxC
    for ch in self.channels:
      h = nn.relu(nn.Conv(ch, (3, 3), padding="SAME")(h))
      if h.shape[1] > 2 and h.shape[2] > 2:
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return MLP(self.hidden, self.num_classes, self.dropout)(h, train)


def make_model(cfg) -> nn.Module:
  if cfg.arch == "mlp":
    return MLP(tuple(cfg.hidden), cfg.num_classes, cfg.dropout)
  if cfg.arch == "cnn":
    return CNN(tuple(cfg.channels), tuple(cfg.hidden), cfg.num_classes, cfg.dropout)
  raise ValueError(f"config.model.arch={cfg.arch!r} is not one of ('mlp', 'cnn')")


def logits_fn(model: nn.Module, params, images: jax.Array, rng: jax.Array | None,
              train: bool) -> jax.Array:
  rngs = {"dropout": rng} if train and rng is not None else {}
  return model.apply({"params": params}, images.astype(jnp.float32), train, rngs=rngs)
