"""Back-propagation image classifiers: an MLP and a small CNN (conv -> pool blocks -> MLP head).

NoProp's back-prop baseline and the distillation teachers/students are instances of these.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.nn.precision import compute_dtype
from jaxrepr.errors import ConfigError
from jaxrepr.nn.pooling import max_pool


class MLP(nn.Module):
  hidden: Sequence[int]
  num_classes: int
  dropout: float = 0.0
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool, return_features: bool = False):
    """Logits; with `return_features`, (logits, penultimate features) (same params, same logits)."""
    h_BxD = x_BxHxWxC.reshape((x_BxHxWxC.shape[0], -1))
    for width in self.hidden:
      h_BxD = nn.relu(nn.Dense(width, dtype=self.dtype)(h_BxD))
      h_BxD = nn.Dropout(self.dropout, deterministic=not train)(h_BxD)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(h_BxD).astype(jnp.float32)
    return (logits, h_BxD) if return_features else logits


class CNN(nn.Module):
  """3x3 conv blocks (each followed by 2x2 max-pooling while the map is larger than 2x2)."""

  channels: Sequence[int]
  hidden: Sequence[int]
  num_classes: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool, return_features: bool = False):
    h = x_BxHxWxC
    for ch in self.channels:
      h = nn.relu(nn.Conv(ch, (3, 3), padding="SAME", dtype=self.dtype)(h))
      if h.shape[1] > 2 and h.shape[2] > 2:
        h = max_pool(h, 2)
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return MLP(self.hidden, self.num_classes, self.dropout, self.dtype)(h, train, return_features)


def make_model(cfg, precision: str = "float32") -> nn.Module:
  """The model of `config.model`, computing in `precision` (`config.precision`)."""
  dtype = compute_dtype(precision)
  if cfg.arch == "mlp":
    return MLP(tuple(cfg.hidden), cfg.num_classes, cfg.dropout, dtype)
  if cfg.arch == "cnn":
    return CNN(tuple(cfg.channels), tuple(cfg.hidden), cfg.num_classes, cfg.dropout, dtype)
  raise ConfigError(f"config.model.arch={cfg.arch!r} is not one of ('mlp', 'cnn')")


def logits_fn(
  model: nn.Module, params, images: jax.Array, rng: jax.Array | None, train: bool
) -> jax.Array:
  rngs = {"dropout": rng} if train and rng is not None else {}
  return model.apply({"params": params}, images.astype(jnp.float32), train, rngs=rngs)
