"""NoProp networks (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1, Figure 6) and label embeddings
(§2.2.1).

DT block uhat_theta_t (one of T independent copies):
  image x: conv32 -> ReLU -> maxpool -> dropout -> conv64 -> ReLU -> dropout -> conv128 -> ReLU ->
           maxpool -> dropout -> flatten -> FC256 -> Norm                           (`ImageEncoder`)
  label z: FC256 -> Norm -> ReLU = h;  h + [FC256 -> Norm -> ReLU -> FC256 -> Norm]  (no final ReLU)
  head:    concat -> FC256 -> Norm -> ReLU -> FC128 -> Norm -> ReLU -> FC m (logits)
CT / FM network: the same branches without normalisation, each ending in ReLU, plus a time branch
  sinusoidal(64) -> FC256 -> ReLU, and head concat(768) -> FC256 -> ReLU -> FC128 -> ReLU -> FC m.

Choices where the paper is silent:
  * Convolutions are 3x3, stride 1, 'SAME' padding (flatten 7x7x128 on 28x28 inputs).
  * Norm ('batch' | 'layer' | 'none', config `model.norm`). The paper's DT block uses batch norm,
    but the method contract carries no mutable state, so 'batch' here has no running averages: it
    normalises with the statistics of the rows that `mask_B` selects (all rows without one).
    Training uses the training batch. Evaluation selects reference rows of training examples that an
    evaluator adds to the batch, so a prediction does not depend on the other examples of its
    evaluation batch (inference.py); without them it falls back to the evaluation batch's real rows.
    'layer' (per-example LayerNorm) is offered for a network with no batch statistics at all.
  * Prototype embeddings (z image-shaped): z goes through its own ImageEncoder (weights not shared
    with the x branch) instead of the FC label branch.
  * Time embedding: t in [0, 1] is scaled by `time_scale` (1000, the DDPM step range) before the
    transformer sinusoid with periods up to 10000.
Weight init: Flax defaults (LeCun normal kernels, zero biases).

Precision (`dtype`, from `config.precision`): convolutions and Dense layers compute in `dtype`
(bfloat16 for mixed precision) with float32 parameters; normalisation statistics are computed in
float32 and the returned logits are cast to float32, so softmax, uhat, losses and the ODE state stay
float32.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.errors import ConfigError
from jaxrepr.nn.pooling import max_pool


class Norm(nn.Module):
  """'batch': statistics of the rows `mask_B` selects, learned scale/bias, no running state;
  'layer'; 'none'."""

  kind: str = "batch"
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x_BxF: jax.Array, mask_B: jax.Array | None = None) -> jax.Array:
    if self.kind == "none":
      return x_BxF
    dtype, x_BxF = x_BxF.dtype, x_BxF.astype(jnp.float32)  # statistics in float32
    if self.kind == "layer":
      return nn.LayerNorm(epsilon=self.epsilon)(x_BxF).astype(dtype)
    if self.kind != "batch":
      raise ConfigError(f"config.model.norm={self.kind!r} is not one of ('batch', 'layer', 'none')")
    if mask_B is None:
      mean_F = jnp.mean(x_BxF, axis=0)
      var_F = jnp.mean(jnp.square(x_BxF - mean_F[None, :]), axis=0)
    else:
      w_Bx1 = mask_B.astype(x_BxF.dtype)[:, None]
      count = jnp.maximum(jnp.sum(w_Bx1), 1.0)
      mean_F = jnp.sum(w_Bx1 * x_BxF, axis=0) / count
      var_F = jnp.sum(w_Bx1 * jnp.square(x_BxF - mean_F[None, :]), axis=0) / count
    scale_F = self.param("scale", nn.initializers.ones, (x_BxF.shape[-1],))
    bias_F = self.param("bias", nn.initializers.zeros, (x_BxF.shape[-1],))
    y_BxF = (x_BxF - mean_F[None, :]) * jax.lax.rsqrt(var_F[None, :] + self.epsilon)
    return (y_BxF * scale_F[None, :] + bias_F[None, :]).astype(dtype)


class ImageEncoder(nn.Module):
  """Figure 6 image branch: conv stack -> FC `hidden` -> Norm (DT) or ReLU (CT/FM, `final='relu'`).

  Reusable by a back-prop classifier: `ImageEncoder(final='relu')(x_BxHxWxC, train=...)` gives
  (B, hidden) features; it needs a 'dropout' rng when train=True and dropout > 0.
  """

  conv_features: Sequence[int] = (32, 64, 128)
  hidden: int = 256
  dropout: float = 0.2
  norm: str = "batch"
  final: str = "norm"  # 'norm' (DT) | 'relu' (CT/FM)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, x_BxHxWxC: jax.Array, *, train: bool, mask_B: jax.Array | None = None
  ) -> jax.Array:
    if x_BxHxWxC.ndim != 4:
      raise ValueError(f"ImageEncoder expects NHWC images, got shape {x_BxHxWxC.shape}")
    h = x_BxHxWxC.astype(self.dtype)
    for i, features in enumerate(self.conv_features):
      h = nn.relu(nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype)(h))
      if i != 1:  # Figure 6 pools after the first and the last conv only
        h = max_pool(h, 2, "SAME")
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h_BxF = nn.Dense(self.hidden, dtype=self.dtype)(h.reshape(h.shape[0], -1))
    if self.final == "relu":
      return nn.relu(h_BxF)
    return Norm(self.norm)(h_BxF, mask_B)


def _as_image(z_BxD: jax.Array, image_shape: Sequence[int]) -> jax.Array:
  return z_BxD.reshape((z_BxD.shape[0],) + tuple(image_shape))


class DTBlock(nn.Module):
  """One NoProp-DT block: (z_{t-1}, x) -> logits over classes (Figure 6, left).
  uhat = softmax @ W."""

  num_classes: int
  conv_features: Sequence[int] = (32, 64, 128)
  hidden: int = 256
  head_hidden: int = 128
  dropout: float = 0.2
  norm: str = "batch"
  z_image_shape: tuple[int, ...] | None = None  # set for prototype embeddings
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, z_BxD: jax.Array, x_BxHxWxC: jax.Array, *, train: bool, mask_B: jax.Array | None = None
  ) -> jax.Array:
    enc = lambda: ImageEncoder(
      self.conv_features, self.hidden, self.dropout, self.norm, "norm", self.dtype
    )
    dense = lambda features: nn.Dense(features, dtype=self.dtype)
    x_BxF = enc()(x_BxHxWxC, train=train, mask_B=mask_B)
    if self.z_image_shape is not None:
      z_BxF = enc()(_as_image(z_BxD, self.z_image_shape), train=train, mask_B=mask_B)
    else:
      h_BxF = nn.relu(Norm(self.norm)(dense(self.hidden)(z_BxD), mask_B))
      r_BxF = nn.relu(Norm(self.norm)(dense(self.hidden)(h_BxF), mask_B))
      z_BxF = h_BxF + Norm(self.norm)(dense(self.hidden)(r_BxF), mask_B)
    h = jnp.concatenate([x_BxF, z_BxF], axis=-1)
    h = nn.relu(Norm(self.norm)(dense(self.hidden)(h), mask_B))
    h = nn.relu(Norm(self.norm)(dense(self.head_hidden)(h), mask_B))
    return dense(self.num_classes)(h).astype(jnp.float32)


def sinusoidal_embedding(t_B: jax.Array, dim: int, scale: float = 1000.0) -> jax.Array:
  """Transformer sinusoid of scale * t, (B, dim)."""
  half = dim // 2
  freqs_H = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  arg_BxH = scale * t_B[:, None] * freqs_H[None, :]
  return jnp.concatenate([jnp.sin(arg_BxH), jnp.cos(arg_BxH)], axis=-1)


class CTFMNet(nn.Module):
  """The NoProp-CT / FM network (Figure 6, right): (z_t, x, t) -> logits; no normalisation."""

  num_classes: int
  conv_features: Sequence[int] = (32, 64, 128)
  hidden: int = 256
  head_hidden: int = 128
  dropout: float = 0.2
  time_dim: int = 64
  time_scale: float = 1000.0
  z_image_shape: tuple[int, ...] | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, z_BxD: jax.Array, x_BxHxWxC: jax.Array, t_B: jax.Array, *, train: bool
  ) -> jax.Array:
    enc = lambda: ImageEncoder(
      self.conv_features, self.hidden, self.dropout, "none", "relu", self.dtype
    )
    dense = lambda features: nn.Dense(features, dtype=self.dtype)
    x_BxF = enc()(x_BxHxWxC, train=train)
    if self.z_image_shape is not None:
      z_BxF = enc()(_as_image(z_BxD, self.z_image_shape), train=train)
    else:
      z_BxF = nn.relu(dense(self.hidden)(z_BxD))
    t_BxF = nn.relu(dense(self.hidden)(sinusoidal_embedding(t_B, self.time_dim, self.time_scale)))
    h = jnp.concatenate([x_BxF, z_BxF, t_BxF], axis=-1)
    h = nn.relu(dense(self.hidden)(h))
    h = nn.relu(dense(self.head_hidden)(h))
    return dense(self.num_classes)(h).astype(jnp.float32)


# ------------------------------------------------------------------------- label embeddings W_Embed
def prototypes(images_BxHxWxC: jax.Array, labels_B: jax.Array, num_classes: int) -> jax.Array:
  """Per class, the image with the smallest median Euclidean distance to the other images of its
  class (§2.2.1), flattened: (m, H*W*C). A class absent from the batch (or with one image) falls
  back to the batch image with the smallest median distance to all images."""
  x_BxP = images_BxHxWxC.reshape(images_BxHxWxC.shape[0], -1).astype(jnp.float32)
  sq_B = jnp.sum(x_BxP**2, axis=-1)
  d2_BxB = sq_B[:, None] + sq_B[None, :] - 2.0 * x_BxP @ x_BxP.T
  dist_BxB = jnp.sqrt(jnp.maximum(d2_BxB, 0.0))
  n = x_BxP.shape[0]
  off_diag_BxB = ~jnp.eye(n, dtype=bool)
  fallback = jnp.argmin(jnp.nanmedian(jnp.where(off_diag_BxB, dist_BxB, jnp.nan), axis=1))

  def one(c):
    in_c_B = labels_B == c
    pair_BxB = in_c_B[:, None] & in_c_B[None, :] & off_diag_BxB
    med_B = jnp.nanmedian(jnp.where(pair_BxB, dist_BxB, jnp.nan), axis=1)
    med_B = jnp.where(in_c_B & ~jnp.isnan(med_B), med_B, jnp.inf)
    return jnp.where(jnp.isfinite(jnp.min(med_B)), jnp.argmin(med_B), fallback)

  rows_M = jax.vmap(one)(jnp.arange(num_classes))
  return x_BxP[rows_M]


def init_embedding(
  rng: jax.Array, kind: str, num_classes: int, embed_dim: int, images: jax.Array, labels: jax.Array
) -> jax.Array | None:
  """The learned W_Embed (m, d), or None for the fixed one-hot identity."""
  if kind == "onehot":
    return None
  if kind == "learned":
    # Orthonormal rows when m <= d (the paper's "orthogonal when possible"); otherwise orthonormal
    # columns, a random init (the paper's "random otherwise").
    return nn.initializers.orthogonal()(rng, (num_classes, embed_dim), jnp.float32)
  if kind == "prototype":
    return prototypes(images, labels, num_classes)
  raise ConfigError(
    f"config.model.embedding={kind!r} is not one of ('onehot', 'learned', 'prototype')"
  )


def embedding_matrix(params: dict, num_classes: int) -> jax.Array:
  """W_Embed (m, d): params['embed'] when learned, else the fixed identity (one-hot)."""
  if "embed" in params:
    return params["embed"]
  return jnp.eye(num_classes, dtype=jnp.float32)
