"""NoProp losses (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1): DT Eq. 8 / Eq. 61, CT Eq. 9,
FM Eqs. 10-13.

All losses are plain means over the batch. Every denoising input z is sampled from q(z | y), never
produced by another block, so no forward or backward pass crosses blocks.

DT (Alg. 1). Per block t (1-based), with z_{t-1} ~ q(z_{t-1} | y) and
uhat_t = softmax(f_t(z_{t-1}, x)) W:
    D_t = (T/2) eta (SNR(t) - SNR(t-1)) mean_i |uhat_t - u_{y_i}|^2,
    CE  = mean_i -log phat(y_i | z_T),  z_T ~ q(z_T | y)  (Linear + softmax classifier, Eq. 14),
    KL  = mean_i KL(q(z_0|y_i) || N(0, I))                 (closed form, see schedules.kl_to_prior).
`model.block_schedule` picks what one step optimises:
    'all'     CE + KL + mean_t D_t   (Eq. 8 with the expectation over t computed exactly; every
              block gets its own gradient in the same step, scaled by 1/T),
    'sampled' CE + KL + D_t, t ~ U{1..T}  (Eq. 61; only block t is evaluated),
    'fixed'   CE + KL + D_t, t = model.block_index  (the paper's sequential schedule, one stage per
              block, run by composing the trainer per stage).
The noise and dropout keys of block t are fold_in(key, t) in every mode, so 'sampled' computes
exactly the term 'all' computes for that block.

CT (Alg. 2): L = CE(z_1) + KL(z_0) + (eta/2) mean_i w(t_i) |uhat(z_{t_i}, x, t_i) - u_{y_i}|^2,
t_i ~ U(0, 1), with `model.ct_weight` choosing w(t):
    'snr_prime'        SNR'(t), the paper's Eq. 9 (by autodiff through the learned gamma network);
    'neg_gamma_prime'  SNR'(t) / SNR(t) = -gamma'(t), the weight of each log-SNR step;
    'uniform'          1.
With the schedule starting at gamma = -+7 (SNR from e^-7 to e^7), SNR' puts almost all the weight
on t near 1, where z_t alone already tells the label, and the network barely learns to read the
image at small t; -gamma' spreads it over t. The paper's weight is the default; both are reported
in docs/noprop.md.

FM (Alg. 3): L = mean_i |v(z_t, x, t) - (u_y - z_0)|^2 with v = logits W (no softmax); with a
learned W_Embed add the anchor mean_i -log phat(y_i | z_t + (1 - t) v) (Eqs. 12-13).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxrepr.nn import precision as precision_lib
from jaxrepr.methods.noprop import model as model_lib
from jaxrepr.methods.noprop import schedules


CT_WEIGHTS = ("snr_prime", "neg_gamma_prime", "uniform")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything a NoProp loss or predictor needs besides params (static, hashable-free)."""

  variant: str  # 'dt' | 'ct' | 'fm' | 'backprop'
  num_classes: int
  embedding: str  # 'onehot' | 'learned' | 'prototype'
  embed_dim: int
  num_blocks: int  # T (DT)
  eta: float  # or, in a replica step sweeping model.eta, that replica's traced scalar
  conv_features: tuple[int, ...]
  hidden: int
  head_hidden: int
  dropout: float
  norm: str
  sched: schedules.DiscreteSchedule | None
  block_schedule: str = "all"
  block_index: int | None = None
  gamma_hidden: int = 64
  gamma_0: float = -7.0
  gamma_1: float = 7.0
  ct_weight: str = "snr_prime"
  sigma: float = 0.0
  time_dim: int = 64
  time_scale: float = 1000.0
  solver: str = "euler"
  inference_steps: int = 1000
  deterministic: bool = False
  chain_alpha_init: float = 0.5
  chain_head_init: str = "embedding"  # 'embedding' | 'random' (see `classifier`)
  precision: str = "float32"  # compute dtype of the blocks / network (config.precision)

  def compute_dtype(self):
    return precision_lib.compute_dtype(self.precision)

  def z_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return tuple(image_shape) if self.embedding == "prototype" else None

  def block(self, image_shape: tuple[int, ...]) -> model_lib.DTBlock:
    return model_lib.DTBlock(
      self.num_classes,
      self.conv_features,
      self.hidden,
      self.head_hidden,
      self.dropout,
      self.norm,
      self.z_shape(image_shape),
      self.compute_dtype(),
    )

  def net(self, image_shape: tuple[int, ...]) -> model_lib.CTFMNet:
    return model_lib.CTFMNet(
      self.num_classes,
      self.conv_features,
      self.hidden,
      self.head_hidden,
      self.dropout,
      self.time_dim,
      self.time_scale,
      self.z_shape(image_shape),
      self.compute_dtype(),
    )

  def gamma(self) -> schedules.GammaNetwork:
    return schedules.GammaNetwork(self.gamma_hidden, self.gamma_0, self.gamma_1)

  def classifier(self) -> nn.Dense:
    """The linear classifier on z_T (Eq. 14); the paper gives no init.

    NoProp (DT, CT, FM): zero-initialised. It reads samples of q(z_T|y), and with Flax's default
    LeCun-normal kernel the random part decides the argmax of this 10 x 10 map for hundreds of
    steps at lr 1e-3 (31% after 160 steps against 100% from zero), so short runs measured the
    init, not the method.
    Back-prop chain: see `chain_head_kernel`; the module's own init (LeCun normal) is what
    `model.chain_head_init='random'` keeps.
    """
    if self.variant == "backprop":
      return nn.Dense(self.num_classes)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)


def chain_head_kernel(w_MxD: jax.Array) -> jax.Array:
  """The back-prop chain's initial classifier kernel (d, m) for `model.chain_head_init='embedding'`:
  W_Embed^T, so logit c = <z_T, u_c> (the identity for one-hot labels), and a zero bias.

  Why: every block's output is softmax(.) @ W_Embed, so z_T starts near the convex hull of the
  class embeddings (for one-hot labels, the simplex). A random 10 x 10 head maps those corners to
  logits about 0.3 apart and decides at random which corner stands for which class: the chain's
  training cross-entropy stayed at 1.7-1.8, and three seeds reached 85.2 / 67.4 / 57.1% test
  accuracy on digits. With W_Embed^T the corner u_c already scores class c highest, and the same
  runs reached 99.4 / 99.2 / 98.6%. A zero head (NoProp's) would pass no gradient to the blocks at
  the first step. The paper gives no init for this head. For prototype embeddings the logits are
  inner products with images of different norms, so a corner scores its own class highest only
  when no other prototype overlaps it more (true of the training-set prototypes of digits and
  MNIST-5k).
  """
  return jnp.transpose(w_MxD)


# Batch-norm reference rows at evaluation (see inference.py): training images and their labels that
# an evaluator may add to a predict batch, with any leading size.
REFERENCE_IMAGE, REFERENCE_LABEL = "reference_image", "reference_label"


def reference_mask(n_ref: int, n_eval: int) -> jax.Array:
  """(n_ref + n_eval,) float32: 1 on the reference rows (placed first), 0 on the evaluated ones;
  the `mask_B` that makes norm='batch' normalise with the reference rows' statistics only."""
  return jnp.concatenate([jnp.ones((n_ref,), jnp.float32), jnp.zeros((n_eval,), jnp.float32)])


def check_batch(batch: dict[str, Any]) -> None:
  for key in ("image", "label"):
    if key not in batch:
      raise KeyError(f"NoProp needs batch[{key!r}]; the batch has keys {sorted(batch)}")
  if batch["image"].ndim != 4:
    raise ValueError(f"batch['image'] must be NHWC, got shape {batch['image'].shape}")


def cross_entropy(logits_BxM: jax.Array, labels_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BxM, labels_B))
  acc = jnp.mean((jnp.argmax(logits_BxM, -1) == labels_B).astype(jnp.float32))
  return ce, acc


def sample_q(rng: jax.Array, u_BxD: jax.Array, abar: jax.Array) -> jax.Array:
  """z ~ q(z | y) = N(sqrt(abar) u_y, (1 - abar) I); abar scalar or (B,)."""
  abar_Bx1 = jnp.reshape(abar, (-1, 1)) if jnp.ndim(abar) else abar
  eps_BxD = jax.random.normal(rng, u_BxD.shape, u_BxD.dtype)
  return jnp.sqrt(abar_Bx1) * u_BxD + jnp.sqrt(1.0 - abar_Bx1) * eps_BxD


def _ce_kl(
  spec: Spec,
  params: dict,
  u_BxD: jax.Array,
  labels_B: jax.Array,
  abar_end: jax.Array,
  abar_0: jax.Array,
  rng: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  z_end_BxD = sample_q(rng, u_BxD, abar_end)
  logits = spec.classifier().apply({"params": params["classifier"]}, z_end_BxD)
  ce, acc = cross_entropy(logits, labels_B)
  kl = jnp.mean(schedules.kl_to_prior(u_BxD, abar_0))
  return ce, kl, acc


# ----------------------------------------------------------------------------------------------- DT
def _block_term(
  spec: Spec,
  params_t: dict,
  w_MxD: jax.Array,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  t: jax.Array,
) -> jax.Array:
  """D_t of block t with that block's params and W_Embed given separately."""
  x = batch["image"]
  u_BxD = w_MxD[batch["label"]]
  k_noise, k_drop = jax.random.split(rng)
  abar = jnp.asarray(spec.sched.abar, jnp.float32)
  weight = jnp.asarray(spec.sched.weight, jnp.float32)
  z_BxD = sample_q(jax.random.fold_in(k_noise, t), u_BxD, abar[t - 1])
  logits_BxM = spec.block(x.shape[1:]).apply(
    {"params": params_t}, z_BxD, x, train=True, rngs={"dropout": jax.random.fold_in(k_drop, t)}
  )
  uhat_BxD = jax.nn.softmax(logits_BxM, axis=-1) @ w_MxD
  sq_B = jnp.sum(jnp.square(uhat_BxD - u_BxD), axis=-1)
  return 0.5 * spec.num_blocks * spec.eta * weight[t] * jnp.mean(sq_B)


def dt_block_term(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array, t: jax.Array
) -> jax.Array:
  """D_t for block t (1-based, may be traced): evaluates block t only, on
  z_{t-1} ~ q(z_{t-1} | y)."""
  params_t = jax.tree.map(lambda p: p[t - 1], params["blocks"])
  return _block_term(
    spec, params_t, model_lib.embedding_matrix(params, spec.num_classes), batch, rng, t
  )


def dt_block_terms(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> jax.Array:
  """(D_1, ..., D_T), all blocks unrolled with static indices.

  Under jax.vmap (per-block kernels become one grouped convolution: 4.5x slower on a 2-core CPU)
  or lax.scan (convolutions inside a loop body: ~40x slower, though it holds one block's
  activations) XLA's CPU backend picks slow convolution kernels. The price of unrolling: XLA keeps
  every block's activations live in one step (peak ~T times one block's, measured; a data
  dependency forcing block t+1 to wait for block t's gradient cut it by only ~20%), whereas
  `block_schedule='sampled'` holds one block's.
  """
  return jnp.stack(
    [dt_block_term(spec, params, batch, rng, jnp.int32(t)) for t in range(1, spec.num_blocks + 1)]
  )


def dt_loss(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  check_batch(batch)
  k_block, k_ce, k_t = jax.random.split(rng, 3)
  u_BxD = model_lib.embedding_matrix(params, spec.num_classes)[batch["label"]]
  abar = spec.sched.abar
  ce, kl, acc = _ce_kl(
    spec, params, u_BxD, batch["label"], jnp.float32(abar[-1]), jnp.float32(abar[0]), k_ce
  )
  metrics = {"ce": ce, "kl": kl, "accuracy_zT": acc}
  T = spec.num_blocks
  if spec.block_schedule == "all":
    terms_T = dt_block_terms(spec, params, batch, k_block)
    denoise = jnp.mean(terms_T)
    metrics.update({f"denoise_t{i + 1}": terms_T[i] for i in range(T)})
  else:
    if spec.block_schedule == "sampled":
      t = jax.random.randint(k_t, (), 1, T + 1)
    else:  # 'fixed', validated at build time
      t = jnp.int32(spec.block_index)
    denoise = dt_block_term(spec, params, batch, k_block, t)
    metrics["block"] = t.astype(jnp.float32)
  metrics["denoise"] = denoise
  loss = ce + kl + denoise
  return loss, metrics


# ----------------------------------------------------------------------------------------------- CT
def ct_loss(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  check_batch(batch)
  x, labels_B = batch["image"], batch["label"]
  k_t, k_z, k_drop, k_ce = jax.random.split(rng, 4)
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  u_BxD = w_MxD[labels_B]
  gamma_fn = lambda t: spec.gamma().apply({"params": params["schedule"]}, t)
  snr_fn = lambda t: schedules.ct_snr(gamma_fn(t))
  t_B = jax.random.uniform(k_t, labels_B.shape, jnp.float32)
  abar_B = schedules.ct_abar(gamma_fn(t_B))
  if spec.ct_weight == "snr_prime":
    weight_B = jax.vmap(jax.grad(snr_fn))(t_B)
  elif spec.ct_weight == "neg_gamma_prime":
    weight_B = -jax.vmap(jax.grad(gamma_fn))(t_B)
  else:
    weight_B = jnp.ones_like(t_B)
  z_BxD = sample_q(k_z, u_BxD, abar_B)
  logits_BxM = spec.net(x.shape[1:]).apply(
    {"params": params["net"]}, z_BxD, x, t_B, train=True, rngs={"dropout": k_drop}
  )
  uhat_BxD = jax.nn.softmax(logits_BxM, axis=-1) @ w_MxD
  sq_B = jnp.sum(jnp.square(uhat_BxD - u_BxD), axis=-1)
  denoise = 0.5 * spec.eta * jnp.mean(weight_B * sq_B)
  abar_1 = schedules.ct_abar(gamma_fn(jnp.ones((), jnp.float32)))
  abar_0 = schedules.ct_abar(gamma_fn(jnp.zeros((), jnp.float32)))
  ce, kl, acc = _ce_kl(spec, params, u_BxD, labels_B, abar_1, abar_0, k_ce)
  metrics = {
    "ce": ce,
    "kl": kl,
    "denoise": denoise,
    "accuracy_z1": acc,
    "snr_0": snr_fn(jnp.zeros((), jnp.float32)),
    "snr_1": snr_fn(jnp.ones((), jnp.float32)),
  }
  return ce + kl + denoise, metrics


# ----------------------------------------------------------------------------------------------- FM
def fm_loss(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  check_batch(batch)
  x, labels_B = batch["image"], batch["label"]
  k_t, k_z0, k_eps, k_drop = jax.random.split(rng, 4)
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  u_BxD = w_MxD[labels_B]
  t_B = jax.random.uniform(k_t, labels_B.shape, jnp.float32)
  z0_BxD = jax.random.normal(k_z0, u_BxD.shape, jnp.float32)
  eps_BxD = jax.random.normal(k_eps, u_BxD.shape, jnp.float32)
  zt_BxD = schedules.fm_interpolate(u_BxD, z0_BxD, t_B, eps_BxD, spec.sigma)
  logits_BxM = spec.net(x.shape[1:]).apply(
    {"params": params["net"]}, zt_BxD, x, t_B, train=True, rngs={"dropout": k_drop}
  )
  v_BxD = logits_BxM @ w_MxD
  flow = jnp.mean(jnp.sum(jnp.square(v_BxD - (u_BxD - z0_BxD)), axis=-1))
  metrics = {"flow": flow}
  loss = flow
  if "classifier" in params:  # learned W_Embed: the anchor term keeps embeddings apart (Eqs. 12-13)
    z1_BxD = zt_BxD + (1.0 - t_B)[:, None] * v_BxD
    logits = spec.classifier().apply({"params": params["classifier"]}, z1_BxD)
    ce, acc = cross_entropy(logits, labels_B)
    metrics.update({"ce": ce, "accuracy_z1": acc})
    loss = loss + ce
  return loss, metrics


# ---------------------------------------------------------------------------- back-prop baseline
def chain_logits(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array, *, train: bool
) -> jax.Array:
  """The paper's back-propagation baseline (§4, "Backprop"): the T DT blocks
  chained and trained end to end,
      z_0 ~ N(0, I),  z_t = (1 - alpha_t) z_{t-1} + alpha_t uhat_t(z_{t-1}, x),
      alpha_t = tanh(w_t),
  logits = classifier(z_T). The paper gives no init for w_t: alpha_t starts at
  `model.chain_alpha_init` (0.5). Blocks unrolled as in `dt_block_terms`; every block's activations
  are live for the backward pass, which NoProp-DT avoids when it trains one block per step
  (`block_schedule='sampled'`; its all-blocks step also holds every block under XLA, see there).
  """
  x_NxHxWxC = batch["image"]
  w_MxD = model_lib.embedding_matrix(params, spec.num_classes)
  k_z0, k_drop = jax.random.split(rng)
  z_NxD = jax.random.normal(k_z0, (x_NxHxWxC.shape[0], w_MxD.shape[1]), jnp.float32)
  mask_N = None if train else batch.get("mask")
  n_ref = 0
  if not train and REFERENCE_IMAGE in batch:
    # Batch norm at evaluation takes the statistics of the reference rows only (inference.py):
    # they run through the chain beside the evaluated rows, from their own z_0.
    x_ref = batch[REFERENCE_IMAGE].astype(x_NxHxWxC.dtype)
    n_ref = x_ref.shape[0]
    z_ref = jax.random.normal(jax.random.fold_in(k_z0, 1), (n_ref, w_MxD.shape[1]), jnp.float32)
    x_NxHxWxC = jnp.concatenate([x_ref, x_NxHxWxC])
    z_NxD = jnp.concatenate([z_ref, z_NxD])
    mask_N = reference_mask(n_ref, batch["image"].shape[0])
  alpha_T = jnp.tanh(params["mix"])
  block = spec.block(x_NxHxWxC.shape[1:])
  for t in range(1, spec.num_blocks + 1):
    params_t = jax.tree.map(lambda p, t=t: p[t - 1], params["blocks"])
    rngs = {"dropout": jax.random.fold_in(k_drop, t)} if train else {}
    logits_NxM = block.apply(
      {"params": params_t}, z_NxD, x_NxHxWxC, train=train, mask_B=mask_N, rngs=rngs
    )
    uhat_NxD = jax.nn.softmax(logits_NxM, axis=-1) @ w_MxD
    z_NxD = (1.0 - alpha_T[t - 1]) * z_NxD + alpha_T[t - 1] * uhat_NxD
  return spec.classifier().apply({"params": params["classifier"]}, z_NxD)[n_ref:]


def backprop_loss(
  spec: Spec, params: dict, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of the chained network (the paper does not state the baseline's loss; CE is the
  choice here, see the paper §4)."""
  check_batch(batch)
  ce, acc = cross_entropy(chain_logits(spec, params, batch, rng, train=True), batch["label"])
  return ce, {"ce": ce, "accuracy": acc, "alpha_mean": jnp.mean(jnp.tanh(params["mix"]))}


LOSSES = {"dt": dt_loss, "ct": ct_loss, "fm": fm_loss, "backprop": backprop_loss}
