"""One encoder per modality and the learned logit scale.

Encoders (dense layers initialised as PyTorch's nn.Linear): 'linear' (one Dense with bias, the
Symile XOR experiments' encoder), 'mlp' (ReLU hidden layers, then a Dense to `dim`), 'cnn' (3x3
conv -> 2x2 max-pool blocks, then the MLP; for image modalities of shape (H, W, C)). Output
normalisation: 'l2' (cosine similarity, CLIP and the XOR experiments), 'layernorm' (the Symile-M3 /
MIMIC heads: Dense then LayerNorm, not unit norm), or 'none'.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.errors import ConfigError
from jaxrepr.nn.pooling import max_pool

ENCODERS = ("linear", "mlp", "cnn")
NORMALIZE = ("l2", "layernorm", "none")


def _torch_uniform(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's nn.Linear initialisation of weight and bias
  (the Symile reference encoders). A zero bias would map the all-zero XOR input to the zero
  vector, where L2 normalisation has no direction and an unbounded gradient."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dense(features: int, fan_in: int) -> nn.Dense:
  init = _torch_uniform(fan_in)
  return nn.Dense(features, kernel_init=init, bias_init=init)


class Encoder(nn.Module):
  arch: str
  dim: int
  hidden: Sequence[int] = ()
  channels: Sequence[int] = ()
  normalize: str = "l2"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.astype(jnp.float32)
    if self.arch == "cnn":
      for ch in self.channels:
        h = nn.relu(nn.Conv(ch, (3, 3), padding="SAME")(h))
        if h.shape[1] > 2 and h.shape[2] > 2:
          h = max_pool(h, 2)
    h_BxF = h.reshape((h.shape[0], -1))
    if self.arch != "linear":
      for width in self.hidden:
        h_BxF = nn.relu(_dense(width, h_BxF.shape[-1])(h_BxF))
    r_BxD = _dense(self.dim, h_BxF.shape[-1])(h_BxF)
    if self.normalize == "layernorm":
      return nn.LayerNorm()(r_BxD)
    if self.normalize == "l2":
      return r_BxD / jnp.sqrt(jnp.maximum(jnp.sum(r_BxD * r_BxD, -1, keepdims=True), 1e-24))
    return r_BxD


class ContrastiveModel(nn.Module):
  """{modality: (B, dim) representation} for the modalities present in the batch, and the
  temperature parameter t (s = exp(t))."""

  modalities: Sequence[str]
  arch: str
  dim: int
  hidden: Sequence[int]
  channels: Sequence[int]
  normalize: str
  logit_scale_init: float

  def setup(self):
    self.encoders = {
      m: Encoder(self.arch, self.dim, tuple(self.hidden), tuple(self.channels), self.normalize)
      for m in self.modalities
    }
    self.log_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())

  def __call__(self, batch: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array]:
    reps = {m: self.encoders[m](batch[m]) for m in self.modalities if m in batch}
    return reps, self.log_scale


def make_model(cfg) -> ContrastiveModel:
  """The model of `config.model`."""
  if cfg.encoder not in ENCODERS:
    raise ConfigError(f"config.model.encoder={cfg.encoder!r} is not one of {ENCODERS}")
  if cfg.normalize not in NORMALIZE:
    raise ConfigError(f"config.model.normalize={cfg.normalize!r} is not one of {NORMALIZE}")
  if len(cfg.modalities) < 2:
    raise ConfigError(f"config.model.modalities={cfg.modalities!r}: a contrast needs at least two")
  return ContrastiveModel(
    modalities=tuple(cfg.modalities),
    arch=cfg.encoder,
    dim=cfg.dim,
    hidden=tuple(cfg.hidden),
    channels=tuple(cfg.channels),
    normalize=cfg.normalize,
    logit_scale_init=float(cfg.logit_scale_init),
  )
