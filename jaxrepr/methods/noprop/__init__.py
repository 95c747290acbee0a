"""NoProp: training without end-to-end back-propagation (Li, Teh, Pascanu 2025,
arXiv 2503.24322 v1).

Each DT block learns on its own to denoise a noisy label embedding; no gradient crosses blocks.
`build(config) -> Method` reads `config.model` (see `default_model_config`):

  variant            'dt' (discrete, Eq. 8) | 'ct' (continuous, Eq. 9)
                     | 'fm' (flow matching, Eqs. 10-13)
                     | 'backprop' (the paper's baseline: the T DT blocks chained, trained end to
                       end)
                     | 'cnn' (one back-prop network of Figure 6's parts, cnn.py; one-hot only)
  num_classes        m
  embedding          'onehot' (fixed identity) | 'learned' (dim `embed_dim`, orthogonal init) |
                     'prototype' (image-sized, per-class training images, see below)
  embed_dim          d of the learned embedding (paper: 20)
  num_blocks         T for DT (paper: 10)
  eta                denoising weight (paper: DT 0.1, CT 1; unused by FM); `SWEEPABLE`:
                     `--config.sweep='model.eta=0.1,1'` trains its values as replicas of one
                     program (jaxrepr/replicas.py), each replica's eta a traced scalar in the loss
  conv_features, hidden, head_hidden, dropout   Figure 6 widths (32, 64, 128), 256, 128, 0.2
  norm               'batch' | 'layer' | 'none' (DT blocks; see model.py for what 'batch' means
                     here)
  cosine_offset, abar_min, abar_max   the DT cosine schedule (schedules.py)
  block_schedule     'all' | 'sampled' | 'fixed' (loss.py); block_index: placeholder(int), 1-based,
                     for 'fixed'
  gamma_hidden, gamma_0, gamma_1   the CT learned schedule and its initial endpoints
  ct_weight          CT's denoising weight: 'snr_prime' (Eq. 9), 'neg_gamma_prime', 'uniform'
  sigma              FM path noise (paper: not given; 0 = the exact conditional path)
  time_dim, time_scale   CT/FM time embedding
  solver, inference_steps   CT/FM ODE solver ('euler' | 'heun') and step count (paper: 1000)
  deterministic      DT inference without the sqrt(c_t) eps term
  chain_alpha_init   back-prop baseline: the initial mixing weight alpha_t = tanh(w_t)
  chain_head_init    back-prop baseline: its classifier starts at W_Embed^T ('embedding', the
                     identity for one-hot) or at Flax's random init ('random');
                     see loss.chain_head_kernel

Params: DT {'blocks': T stacked DTBlock trees (leading axis T), 'classifier', ['embed']};
back-prop baseline {'blocks', 'mix' (T,), 'classifier', ['embed']};
CT {'net', 'schedule', 'classifier', ['embed']}; FM {'net', ['classifier', 'embed']}; CNN {'net'}.
Stacking the identically shaped blocks gives one optimiser state, and block t's gradient lands only
in slice t - 1 of every 'blocks' leaf.

Prototype embeddings (§2.2.1: per class, the training image with the smallest median distance to
the other training images of its class) come from the data through the batch, since a method never
reads a data module: with `config.data.class_prototypes=True`, jaxrepr/data/images.py computes them
over the whole training split and row i of every global training batch carries, as
`batch['class_prototype']`, the prototype of class i mod m, so `init` takes rows 0..m-1 of its
example batch (which must hold at least m rows). A batch without that key (a test's, another data
module's) gets the same rule applied to the batch itself (`model.prototypes`).

`config.precision='bfloat16'` runs the convolutions and Dense layers in bfloat16 with float32
parameters; normalisation statistics are computed in float32, the networks' logits are cast to
float32, and the losses, the classifier on z_T, the CT schedule network and the inference state stay
float32 (model.py).

`model.ImageEncoder` (the Figure 6 image branch) is a reusable module: a back-prop classifier can
build its features from it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from jaxrepr.nn.precision import compute_dtype
from jaxrepr.methods.base import Method
from jaxrepr.methods.noprop import inference, loss as loss_lib, model as model_lib, schedules
from jaxrepr.methods.noprop import cnn
from jaxrepr.errors import ConfigError

VARIANTS = ("dt", "ct", "fm", "backprop", "cnn")
CHAIN_HEAD_INITS = ("embedding", "random")
PRECISIONS = ("float32", "bfloat16")  # config.precision values this method implements
# Loss coefficients a sweep may vary inside one program (jaxrepr/methods/base.py): eta weights the
# denoising term of the DT loss (Eq. 8) and of the CT loss (Eq. 9), a number in the loss, not a
# shape. The paper sets it per variant (Table 3: DT 0.1, CT 1) without a sweep.
SWEEPABLE = ("model.eta",)


def default_model_config(variant: str = "dt") -> ml_collections.ConfigDict:
  """Paper defaults (Table 3, Figure 6) for `variant`; fields the paper leaves open are
  documented."""
  if variant not in VARIANTS:
    raise ValueError(f"variant {variant!r} is not one of {VARIANTS}")
  return ml_collections.ConfigDict(
    {
      "variant": variant,
      "num_classes": 10,
      "embedding": "onehot",
      "embed_dim": 20,
      "num_blocks": 10,
      "eta": {"dt": 0.1, "ct": 1.0, "fm": 0.0, "backprop": 0.0, "cnn": 0.0}[variant],
      "conv_features": (32, 64, 128),
      "hidden": 256,
      "head_hidden": 128,
      "dropout": 0.2,
      "norm": "batch",
      "cosine_offset": 0.008,
      "abar_min": 1e-4,
      "abar_max": 0.99,
      "block_schedule": "all",
      "block_index": config_dict.placeholder(int),
      "gamma_hidden": 64,
      "gamma_0": -7.0,
      "gamma_1": 7.0,
      # CT's weight of the denoising term: 'snr_prime' (the paper's Eq. 9), 'neg_gamma_prime'
      # (SNR'/SNR = -gamma'(t)) or 'uniform'; see jaxrepr/methods/noprop/loss.py for why it matters
      # with the gamma_0 / gamma_1 start values above (which the paper leaves open).
      "ct_weight": "snr_prime",
      "sigma": 0.0,
      "time_dim": 64,
      "time_scale": 1000.0,
      "solver": "euler",
      "inference_steps": 1000,
      "deterministic": False,
      "chain_alpha_init": 0.5,
      # The chain's classifier starts at W_Embed^T (the identity for one-hot labels): z_T lies
      # near the simplex of class embeddings, and a random 10 x 10 head gives logit gaps of ~0.3
      # that pick a random corner per class (loss.chain_head_kernel). 'random' restores Flax's init.
      "chain_head_init": "embedding",
    }
  )


def make_spec(model_cfg: ml_collections.ConfigDict, precision: str = "float32") -> loss_lib.Spec:
  """Validates `config.model` (and `config.precision`) and turns them into a static Spec; errors
  name the bad field."""
  compute_dtype(precision)
  cfg = {k: model_cfg[k] for k in default_model_config(model_cfg.variant)}
  checks = {
    "embedding": cfg["embedding"] in ("onehot", "learned", "prototype"),
    "norm": cfg["norm"] in ("batch", "layer", "none"),
    "block_schedule": cfg["block_schedule"] in ("all", "sampled", "fixed"),
    "solver": cfg["solver"] in ("euler", "heun"),
    "ct_weight": cfg["ct_weight"] in loss_lib.CT_WEIGHTS,
    "num_classes": cfg["num_classes"] >= 2,
    "num_blocks": cfg["num_blocks"] >= 1,
    "inference_steps": cfg["inference_steps"] >= 1,
    "dropout": 0.0 <= cfg["dropout"] < 1.0,
    "chain_alpha_init": 0.0 < cfg["chain_alpha_init"] < 1.0,
    "chain_head_init": cfg["chain_head_init"] in CHAIN_HEAD_INITS,
  }
  for field, ok in checks.items():
    if not ok:
      raise ConfigError(f"config.model.{field}={cfg[field]!r} is invalid")
  if cfg["variant"] == "backprop" and cfg["block_schedule"] != "all":
    raise ConfigError(
      "config.model.block_schedule must be 'all' for the back-prop baseline (its "
      f"blocks are one chained network), got {cfg['block_schedule']!r}"
    )
  if cfg["variant"] == "cnn" and cfg["embedding"] != "onehot":
    raise ConfigError(
      f"config.model.embedding={cfg['embedding']!r}: the one-network CNN "
      "(variant 'cnn') is a plain classifier and takes no label embedding"
    )
  if cfg["variant"] in ("ct", "fm", "cnn") and cfg["block_schedule"] != "all":
    raise ConfigError(
      f"config.model.block_schedule={cfg['block_schedule']!r}: {cfg['variant']} "
      "trains one network over continuous time (no blocks to schedule); leave it "
      "'all'"
    )
  if cfg["block_schedule"] == "fixed" and not (
    cfg["block_index"] is not None and 1 <= cfg["block_index"] <= cfg["num_blocks"]
  ):
    raise ConfigError(
      f"config.model.block_index={cfg['block_index']!r} must be in 1..num_blocks "
      "when block_schedule='fixed'"
    )
  sched = (
    schedules.discrete_schedule(
      cfg["num_blocks"], cfg["cosine_offset"], cfg["abar_min"], cfg["abar_max"]
    )
    if cfg["variant"] == "dt"
    else None
  )
  return loss_lib.Spec(
    variant=cfg["variant"],
    num_classes=int(cfg["num_classes"]),
    embedding=cfg["embedding"],
    embed_dim=int(cfg["embed_dim"]),
    num_blocks=int(cfg["num_blocks"]),
    eta=float(cfg["eta"]),
    conv_features=tuple(int(f) for f in cfg["conv_features"]),
    hidden=int(cfg["hidden"]),
    head_hidden=int(cfg["head_hidden"]),
    dropout=float(cfg["dropout"]),
    norm=cfg["norm"],
    sched=sched,
    block_schedule=cfg["block_schedule"],
    block_index=cfg["block_index"],
    gamma_hidden=int(cfg["gamma_hidden"]),
    gamma_0=float(cfg["gamma_0"]),
    gamma_1=float(cfg["gamma_1"]),
    ct_weight=cfg["ct_weight"],
    sigma=float(cfg["sigma"]),
    time_dim=int(cfg["time_dim"]),
    time_scale=float(cfg["time_scale"]),
    solver=cfg["solver"],
    inference_steps=int(cfg["inference_steps"]),
    deterministic=bool(cfg["deterministic"]),
    chain_alpha_init=float(cfg["chain_alpha_init"]),
    chain_head_init=cfg["chain_head_init"],
    precision=precision,
  )


def _training_prototypes(spec: loss_lib.Spec, batch: dict) -> jax.Array:
  """W_Embed (m, H*W*C) from the training-set prototypes the batch carries (module docstring)."""
  table = jnp.asarray(batch["class_prototype"])
  m = spec.num_classes
  if table.shape[0] < m or table.shape[1:] != batch["image"].shape[1:]:
    raise ValueError(
      f"batch['class_prototype'] has shape {table.shape}: init needs at least "
      f"num_classes={m} rows shaped like the images {batch['image'].shape[1:]}"
    )
  # Row i holds the prototype of class i mod m, so rows 0..m-1 are classes 0..m-1.
  return table[:m].reshape(m, -1).astype(jnp.float32)


def init(spec: loss_lib.Spec, rng: jax.Array, batch: dict[str, jax.Array]) -> dict:
  loss_lib.check_batch(batch)
  x = jnp.asarray(batch["image"])[:2]
  k_embed, k_model, k_cls, k_sched = jax.random.split(rng, 4)
  if spec.variant == "cnn":
    return cnn.init(spec, k_model, x)
  params = {}
  if spec.embedding == "prototype" and "class_prototype" in batch:
    embed = _training_prototypes(spec, batch)
  else:
    embed = model_lib.init_embedding(
      k_embed,
      spec.embedding,
      spec.num_classes,
      spec.embed_dim,
      jnp.asarray(batch["image"]),
      jnp.asarray(batch["label"]),
    )
  if embed is not None:
    params["embed"] = embed
  d = spec.num_classes if embed is None else embed.shape[1]
  z = jnp.zeros((x.shape[0], d), jnp.float32)
  if spec.variant in ("dt", "backprop"):
    block = spec.block(x.shape[1:])
    keys = jax.random.split(k_model, spec.num_blocks)
    params["blocks"] = jax.vmap(lambda k: block.init(k, z, x, train=False)["params"])(keys)
  if spec.variant == "backprop":
    # AdamW's weight decay also pulls w_t (so alpha_t) towards 0; the paper does not say.
    params["mix"] = jnp.full((spec.num_blocks,), jnp.arctanh(spec.chain_alpha_init), jnp.float32)
  if spec.variant in ("ct", "fm"):
    t = jnp.zeros((x.shape[0],), jnp.float32)
    params["net"] = spec.net(x.shape[1:]).init(k_model, z, x, t, train=False)["params"]
  if spec.variant == "ct":
    params["schedule"] = spec.gamma().init(k_sched, t)["params"]
  if spec.variant != "fm" or embed is not None:
    params["classifier"] = spec.classifier().init(k_cls, z)["params"]
  if spec.variant == "backprop" and spec.chain_head_init == "embedding":
    w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
    params["classifier"] = {
      "kernel": loss_lib.chain_head_kernel(w_MxD),
      "bias": jnp.zeros((spec.num_classes,), jnp.float32),
    }
  return params


def _note(spec: loss_lib.Spec) -> str:
  if spec.variant == "backprop":
    return (
      f"back-prop baseline: T={spec.num_blocks} DT blocks chained and trained end to end "
      f"({spec.embedding} embedding)"
    )
  if spec.variant == "cnn":
    return "back-prop reference: one CNN of Figure 6's image branch and head"
  if spec.variant != "dt":
    return f"NoProp-{spec.variant.upper()} ({spec.embedding} embedding)"
  weights = ", ".join(f"{w:.3g}" for w in spec.sched.weight[1:])
  return (
    f"NoProp-DT, T={spec.num_blocks} blocks ({spec.embedding} embedding, "
    f"{spec.block_schedule} blocks per step); SNR(t)-SNR(t-1) weights: {weights}"
  )


def build(config: ml_collections.ConfigDict) -> Method:
  spec = make_spec(config.model, config.precision)
  losses = dict(loss_lib.LOSSES, cnn=cnn.cnn_loss)
  predictors = dict(inference.PREDICTORS, cnn=cnn.cnn_predict)
  loss_fn = losses[spec.variant]

  def swept_loss(params, batch, rng, coefficients):
    # One replica's eta (a traced scalar inside the replica step) replaces the config's constant;
    # the loss code is the single run's (FM, the back-prop baseline and the CNN do not read eta).
    eta = coefficients.get("model.eta", spec.eta)
    return loss_fn(dataclasses.replace(spec, eta=eta), params, batch, rng)

  return Method(
    init=functools.partial(init, spec),
    loss=functools.partial(loss_fn, spec),
    predict=functools.partial(predictors[spec.variant], spec),
    param_count_note=_note(spec),
    swept_loss=swept_loss,
  )
