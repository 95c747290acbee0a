"""`contrastive`: representation learning by contrasting aligned tuples of M >= 2 modalities.

Objectives (`config.model.objective`; losses in loss.py):
  'symile'   the Symile loss with the multilinear inner product (Saporta et al., NeurIPS 2024),
             negatives by `negative_sampling` 'n' (O(N), the default of the reference code) or
             'n_squared' (all N^{M-1} combinations)
  'clip'     CLIP's symmetric InfoNCE (Radford et al., 2021); for M > 2 the pairwise sum over all
             pairs, as the Symile reference code (`pairwise_reduce='mean'` averages instead)
  'convirt'  ConVIRT's lambda-weighted asymmetric loss at a fixed tau (Zhang et al., 2020); M = 2,
             modalities[0] is the image v, modalities[1] the text u

Batches: {modality: array (B, ...)} for every name in `config.model.modalities`, one encoder per
modality (model.py). `predict` returns {'reps': {modality: (B, dim)}, 'logit_scale': s} for the
modalities present in the batch (an evaluator can encode candidates of one modality alone);
`embed` the representations of the present modalities concatenated, (B, k * dim).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections

from jaxrepr.errors import ConfigError
from jaxrepr.methods.base import Method
from jaxrepr.methods.contrastive import loss as losses
from jaxrepr.methods.contrastive.model import make_model

OBJECTIVES = ("symile", "clip", "convirt")
# Loss coefficients a sweep may vary inside one program (jaxrepr/methods/base.py): ConVIRT's weight
# lambda of the image->text direction and its temperature tau (Zhang et al., "Contrastive Learning
# of Medical Visual Representations from Paired Images and Text", MLHC 2022, Eqs. 2-4),
# numbers in the loss, not shapes. The other objectives do not read them.
SWEEPABLE = ("model.convirt_lambda", "model.convirt_tau")


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      objective="symile",
      modalities=("a", "b", "c"),
      encoder="linear",
      dim=16,
      hidden=(),
      channels=(),
      normalize="l2",
      # t of s = exp(t): CLIP's log(1/0.07); the Symile XOR toy starts at -0.3
      logit_scale_init=losses.CLIP_LOGIT_SCALE_INIT,
      learn_logit_scale=True,
      # clip s at this value (CLIP: 100); 0 leaves it unclipped, as the Symile reference code
      max_logit_scale=losses.CLIP_MAX_LOGIT_SCALE,
      negative_sampling="n",
      pairwise_reduce="sum",
      convirt_tau=0.1,
      convirt_lambda=0.75,
    )
  )


def _check(cfg: ml_collections.ConfigDict) -> None:
  if cfg.objective not in OBJECTIVES:
    raise ConfigError(f"config.model.objective={cfg.objective!r} is not one of {OBJECTIVES}")
  if cfg.negative_sampling not in losses.NEGATIVE_SAMPLING:
    raise ConfigError(
      f"config.model.negative_sampling={cfg.negative_sampling!r} is not one of "
      f"{losses.NEGATIVE_SAMPLING}"
    )
  if cfg.pairwise_reduce not in losses.PAIRWISE_REDUCE:
    raise ConfigError(
      f"config.model.pairwise_reduce={cfg.pairwise_reduce!r} is not one of {losses.PAIRWISE_REDUCE}"
    )
  if cfg.objective == "convirt" and len(cfg.modalities) != 2:
    raise ConfigError(
      f"config.model.modalities={tuple(cfg.modalities)!r}: ConVIRT contrasts two modalities"
    )
  if not 0.0 <= cfg.convirt_lambda <= 1.0 or cfg.convirt_tau <= 0:
    raise ConfigError(
      f"config.model.convirt_lambda={cfg.convirt_lambda!r} must be in [0, 1] and "
      f"config.model.convirt_tau={cfg.convirt_tau!r} > 0"
    )


def objective_loss(
  cfg,
  reps: list[jax.Array],
  t: jax.Array,
  rng: jax.Array,
  coefficients: Mapping[str, jax.Array] | None = None,
) -> jax.Array:
  """The configured objective on the ordered representations of a (global) batch; `coefficients`
  ({'model.convirt_lambda': scalar, ...}, one replica's values in a sweep) replace config values."""
  if not cfg.learn_logit_scale:
    t = jax.lax.stop_gradient(t)  # the reference code's freeze_logit_scale
  scale = losses.logit_scale(t, cfg.max_logit_scale)
  if cfg.objective == "symile":
    return losses.symile(reps, scale, cfg.negative_sampling, rng)
  if cfg.objective == "clip":
    return losses.pairwise_infonce(reps, scale, cfg.pairwise_reduce)
  coefficients = coefficients or {}
  tau = coefficients.get("model.convirt_tau", cfg.convirt_tau)
  lam = coefficients.get("model.convirt_lambda", cfg.convirt_lambda)
  return losses.convirt(reps[0], reps[1], tau, lam)


def build(config: ml_collections.ConfigDict) -> Method:
  cfg = config.model
  _check(cfg)
  model = make_model(cfg)
  modalities = tuple(cfg.modalities)

  def init(rng, batch):
    return model.init(rng, {m: batch[m] for m in modalities})["params"]

  def encode(params, batch):
    return model.apply({"params": params}, batch)

  def swept_loss(params, batch, rng, coefficients):
    reps, t = encode(params, batch)
    value = objective_loss(cfg, [reps[m] for m in modalities], t, rng, coefficients)
    n = batch[modalities[0]].shape[0]
    scale = losses.logit_scale(t, cfg.max_logit_scale)
    # log N: the level of the bound E[L] >= log N - TC that the reference code logs beside the loss
    return value, {"logit_scale": scale, "log_batch": jnp.log(jnp.float32(n))}

  def loss(params, batch, rng):
    return swept_loss(params, batch, rng, {})

  def predict(params, batch, rng):
    del rng
    reps, t = encode(params, batch)
    if cfg.objective == "convirt":
      return {"reps": reps, "logit_scale": jnp.float32(1.0 / cfg.convirt_tau)}
    return {"reps": reps, "logit_scale": losses.logit_scale(t, cfg.max_logit_scale)}

  def embed(params, batch):
    reps, _ = encode(params, batch)
    return jnp.concatenate([reps[m] for m in modalities if m in reps], axis=-1)

  note = f"{cfg.objective}, {len(modalities)} {cfg.encoder} encoders"
  return Method(
    init=init,
    loss=loss,
    predict=predict,
    param_count_note=note,
    embed=embed,
    swept_loss=swept_loss,
  )
