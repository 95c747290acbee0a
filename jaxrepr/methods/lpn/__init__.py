"""Latent Program Network (Macfarlane & Bonnet, "Searching Latent Program Spaces", arXiv
2411.08706).

`build(config)` returns the `Method`: `init`, the leave-one-out `loss` (loss.py) and `predict`,
which for every pair i of a task uses the other N-1 pairs as the spec, searches the latent with
`config.model.eval_latent` (search.py) and greedily decodes pair i's output with a key/value cache
(decode.py). `solve_task` is the lower-level entry for one task with a padded spec and several test
inputs (the ARC evaluator's). Hyper-parameters live in `config.model`; start from
`default_model_config()` (the paper's pattern model, Table 13: 243,360 counted parameters).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from jaxrepr.methods.base import Method
from jaxrepr.methods.lpn import decode as decode_lib
from jaxrepr.methods.lpn import latent_ascent
from jaxrepr.methods.lpn import loss as loss_lib
from jaxrepr.methods.lpn import model as model_lib
from jaxrepr.methods.lpn import search as search_lib
from jaxrepr.errors import ConfigError

PRECISIONS = ("float32", "bfloat16")  # config.precision values this method implements
# Printed after the parameter count at start-up. The factor 4 is the reference code's: its trainer
# counts the train state after replicating it over the host's devices. Table 15's "1M" is the one
# exception (its model has 154,496 weights; 4x would be 0.62M).
PARAM_COUNT_NOTE = (
  "encoder and decoder weights, each counted once; for the same architectures "
  "the paper's Tables 12-14 and 16 list 4x as many, e.g. 973k for Table 13's "
  "pattern model, which has 243,360, because its reference trainer counted the "
  "train state replicated over the 4 devices of a TPU v4 host"
)


def default_model_config() -> ml_collections.ConfigDict:
  """Pattern-task model of the paper's Table 13 with Grad 0 training and Grad 0 inference."""
  cfg = ml_collections.ConfigDict()
  cfg.max_rows = 10
  cfg.max_cols = 10
  cfg.latent_dim = 32
  cfg.encoder = ml_collections.ConfigDict(
    dict(num_layers=2, num_heads=6, head_dim=16, mlp_factor=1)
  )
  cfg.decoder = ml_collections.ConfigDict(
    dict(num_layers=2, num_heads=6, head_dim=16, mlp_factor=1)
  )
  cfg.positions = "learned"  # 'learned' (reference code) or 'rope' (paper, Table 16)
  cfg.embedding_init = "normal_0.02"  # or 'flax_default' (reference code); model.EMBEDDING_INITS
  cfg.rope_max_freq = 10.0
  cfg.kl_coeff = 1e-4  # beta; 1e-3 for latent_dim 2 (Table 14)
  cfg.remat = False  # recompute block activations in the backward pass
  cfg.attention = "auto"  # 'blocked' | 'xla' | 'auto' (blocked on CPU); nn/attention.py
  cfg.train_latent = ml_collections.ConfigDict(
    dict(
      mode="mean",  # 'mean' | 'gradient_ascent' | 'random_search'
      steps=1,
      lr=0.1,
      num_samples=5,
      scale=0.5,
      stop_gradient=True,  # False: gradient through the latent update [Grad k **]
      select="best",  # 'best' of visited (reference code) | 'last' (paper Alg. 2)
      per_position=True,  # search one LOO position at a time (less memory, same numbers)
      start="encoder",  # 'encoder' | 'prior': pair latents replaced by N(0, I) draws (loss.py)
      # The last share `final_phase_fraction` of config.train.steps (rounded to whole steps) trains
      # with `final_phase`'s fields replacing these (0: one phase). The paper's ARC schedule: Grad
      # 0, then the last 5% (5k of 100k steps) Grad 1.
      final_phase_fraction=0.0,
      final_phase=ml_collections.ConfigDict(dict(mode="gradient_ascent", steps=1)),
    )
  )
  cfg.eval_latent = ml_collections.ConfigDict(
    dict(
      mode="mean",  # one of search.METHODS
      steps=0,
      lr=0.1,
      lr_schedule="constant",  # 'constant' | 'cosine' (gradient ascent; latent_ascent.py)
      num_samples=0,
      scale=0.5,
      generations=0,
      population=8,
      # latent evaluations; overrides steps/samples/generations if set
      budget=config_dict.placeholder(int),
      start="encoder",  # 'encoder' | 'prior' (no encoder) | 'pairs' | 'perturbed' (search.py)
      start_perturbations=4,  # 'perturbed': perturbed starts besides the encoder start
      start_scale=0.5,  # 'perturbed': their Gaussian scale
      score_batch=8,  # random search / encoder sampling: candidates per decoder call
      distinct_attempts=False,  # attempt 2 decodes to a grid other than attempt 1's if it can
      distinct_candidates=8,  # ... chosen among the best this many visited latents
    )
  )
  return cfg


TRAIN_STARTS = ("encoder", "prior")  # config.model.train_latent.start


def check_train_latent(lat_cfg) -> None:
  """ConfigError naming the first bad field of `config.model.train_latent` (its phases included)."""
  name = "config.model.train_latent"
  if lat_cfg.start not in TRAIN_STARTS:
    raise ConfigError(f"{name}.start must be one of {TRAIN_STARTS}, got {lat_cfg.start!r}")
  if not 0.0 <= lat_cfg.final_phase_fraction <= 1.0:
    raise ConfigError(
      f"{name}.final_phase_fraction must be in [0, 1], got {lat_cfg.final_phase_fraction}"
    )
  fields = set(lat_cfg) - set(loss_lib.PHASE_FIELDS)
  for field, value in lat_cfg.final_phase.items():
    if field not in fields:
      raise ConfigError(
        f"{name}.final_phase.{field} is not a training-latent field (one of {sorted(fields)})"
      )
    if field == "start" and value not in TRAIN_STARTS:
      raise ConfigError(f"{name}.final_phase.start must be one of {TRAIN_STARTS}, got {value!r}")


def final_phase_steps(lat_cfg, train_steps: int) -> int:
  """How many of the run's `train_steps` train in the final phase (`final_phase_fraction` of them,
  rounded); 0 means one phase and no `Method.step_loss`."""
  return int(round(lat_cfg.final_phase_fraction * train_steps))


def check_eval_latent(eval_cfg) -> None:
  """ConfigError naming the first bad field of `config.model.eval_latent`."""
  name = "config.model.eval_latent"
  choices = (
    ("mode", search_lib.METHODS),
    ("start", search_lib.STARTS),
    ("lr_schedule", latent_ascent.LR_SCHEDULES),
  )
  for field, allowed in choices:
    if eval_cfg[field] not in allowed:
      raise ConfigError(f"{name}.{field} must be one of {allowed}, got {eval_cfg[field]!r}")
  if eval_cfg.mode == "encoder_sampling" and eval_cfg.start not in search_lib.SAMPLED_STARTS:
    raise ConfigError(
      f"{name}.start must be one of {search_lib.SAMPLED_STARTS} with mode 'encoder_sampling' "
      f"(it draws its samples the way that start is drawn), got {eval_cfg.start!r}"
    )
  for field, low in (("score_batch", 1), ("distinct_candidates", 2), ("start_perturbations", 0)):
    if eval_cfg[field] < low:
      raise ConfigError(f"{name}.{field} must be >= {low}, got {eval_cfg[field]}")


def _search_kwargs(eval_cfg, num_spec_pairs: int) -> dict:
  """search.search's keyword arguments; a budget is split with the starts of a spec of M pairs."""
  starts = search_lib.num_starts(eval_cfg.start, num_spec_pairs, eval_cfg.start_perturbations)
  kw = dict(
    steps=eval_cfg.steps,
    lr=eval_cfg.lr,
    lr_schedule=eval_cfg.lr_schedule,
    num_samples=eval_cfg.num_samples,
    scale=eval_cfg.scale,
    generations=eval_cfg.generations,
    population=eval_cfg.population,
    start=eval_cfg.start,
    start_perturbations=eval_cfg.start_perturbations,
    start_scale=eval_cfg.start_scale,
    score_batch=eval_cfg.score_batch,
  )
  budget = eval_cfg.get("budget")
  if budget is not None:
    if budget < starts:
      raise ConfigError(
        f"config.model.eval_latent.budget={budget} is below the {starts} latent evaluations of "
        f"start {eval_cfg.start!r} alone (a spec of {num_spec_pairs} pairs)"
      )
    kw.update(
      search_lib.counts_for_budget(
        eval_cfg.mode, budget, eval_cfg.population, starts, eval_cfg.start
      )
    )
  return kw


def solve_task(
  encoder,
  decoder,
  params,
  spec_grids,
  spec_shapes,
  spec_mask,
  test_grids,
  test_shapes,
  rng,
  eval_cfg,
):
  """Predicts the outputs of K test inputs of one task from its spec.

  Args: spec_grids (M, R, C, 2), spec_shapes (M, 2, 2), spec_mask (M,) bool (padded pairs False),
    test_grids (K, R, C) inputs, test_shapes (K, 2) = (rows, cols), rng, eval_cfg (mode, ...).
  Returns {'grids', 'grids_2': (K, R, C), 'shapes', 'shapes_2': (K, 2), 'score', 'score_2': (K,),
    'latent_evals', 'decoder_calls': (K,)}; each test input gets fresh encoder samples.

  Attempts 1 and 2 decode the best and second-best visited latents. With
  `eval_cfg.distinct_attempts`, the best `distinct_candidates` latents are all decoded and
  attempt 2 is the best of them whose grid differs from attempt 1's (`decode.distinct_second`);
  that costs distinct_candidates / 2 times the greedy decoding.
  """
  if spec_grids.ndim != 4 or spec_mask.shape != spec_grids.shape[:1]:
    raise ValueError(
      f"spec_grids must be (M, R, C, 2) with spec_mask (M,), got "
      f"{spec_grids.shape} and {spec_mask.shape}"
    )
  check_eval_latent(eval_cfg)
  kw = _search_kwargs(eval_cfg, spec_grids.shape[0])
  # Callers vmap this over tasks, the axis a mesh shards: the attention must not shard_map the
  # inner batch (attention.dot_product_attention, shard_batch).
  encoder, decoder = encoder.clone(shard_batch=False), decoder.clone(shard_batch=False)
  if search_lib.uses_encoder(eval_cfg.start):
    mu, logvar = search_lib.encode_spec(encoder, params["encoder"], spec_grids, spec_shapes)
  else:  # the no-encoder setting: the search replaces these by the prior
    mu = logvar = jnp.zeros((spec_grids.shape[0], encoder.latent_dim), jnp.float32)
  score = search_lib.spec_score_fn(
    decoder,
    params["decoder"],
    spec_grids,
    spec_shapes,
    spec_mask.astype(bool),
    latent_grad_only=eval_cfg.mode == "gradient_ascent",
  )
  k = test_grids.shape[0]
  keep = eval_cfg.distinct_candidates if eval_cfg.distinct_attempts else 2
  res = jax.vmap(
    lambda key: search_lib.search(
      eval_cfg.mode, score, mu, logvar, spec_mask.astype(bool), key, keep=keep, **kw
    )
  )(jax.random.split(rng, k))
  costs = {"latent_evals": res["latent_evals"], "decoder_calls": res["decoder_calls"]}
  if eval_cfg.distinct_attempts:
    return costs | decode_lib.distinct_attempts(
      decoder, params["decoder"], test_grids, test_shapes, res["ranked"], res["ranked_scores"]
    )
  z_2KxZ = jnp.concatenate([res["best"], res["second"]])
  out = decode_lib.greedy_decode(
    decoder,
    params["decoder"],
    jnp.concatenate([test_grids, test_grids]),
    jnp.concatenate([test_shapes, test_shapes]),
    z_2KxZ,
  )
  return {
    "grids": out["grid"][:k],
    "shapes": out["shape"][:k],
    "grids_2": out["grid"][k:],
    "shapes_2": out["shape"][k:],
    "score": res["best_score"],
    "score_2": res["second_score"],
  } | costs


def build(config: ml_collections.ConfigDict) -> Method:
  """The LPN `Method` for `config.model`."""
  model_cfg = config.model
  encoder, decoder = model_lib.modules_from_config(model_cfg, config.precision)
  check_eval_latent(model_cfg.eval_latent)
  lat_cfg = model_cfg.train_latent
  check_train_latent(lat_cfg)
  step_loss = None
  final_steps = final_phase_steps(lat_cfg, config.train.steps)
  if final_steps:
    switch_step = config.train.steps - final_steps
    step_loss = loss_lib.make_step_loss(encoder, decoder, model_cfg, switch_step)

  def init(rng, batch):
    loss_lib.check_batch(batch, model_cfg)
    g, s = batch["grids"][:1, 0], batch["shapes"][:1, 0]
    k_enc, k_dec = jax.random.split(rng)
    z = jnp.zeros((1, model_cfg.latent_dim), jnp.float32)
    return {
      "encoder": encoder.init(k_enc, g, s),
      "decoder": decoder.init(k_dec, g[..., 0], s[:, :, 0], z, g[..., 1], s[:, :, 1]),
    }

  def predict(params, batch, rng):
    loss_lib.check_batch(batch, model_cfg)
    grids, shapes = batch["grids"], batch["shapes"]
    b, n = grids.shape[:2]
    idx = jnp.asarray(loss_lib.others_index(n))
    # The spec of pair i is the other real pairs: a masked (empty) row is in no spec. Its own
    # prediction is made but means nothing (evaluators weight it out).
    pair_mask = batch.get("pair_mask")
    if pair_mask is None:
      pair_mask = jnp.ones((b, n), bool)

    def one(g_NxRxCx2, s_Nx2x2, m_N, i, key):
      out = solve_task(
        encoder,
        decoder,
        params,
        g_NxRxCx2[idx[i]],
        s_Nx2x2[idx[i]],
        m_N[idx[i]],
        g_NxRxCx2[i, None, ..., 0],
        s_Nx2x2[i, None, :, 0],
        key,
        model_cfg.eval_latent,
      )
      return {key_: out[key_][0] for key_ in ("grids", "shapes", "grids_2", "shapes_2")}

    keys = jax.random.split(rng, (b, n))
    per_task = jax.vmap(one, in_axes=(None, None, None, 0, 0))
    return jax.vmap(per_task, in_axes=(0, 0, 0, None, 0))(
      grids, shapes, pair_mask, jnp.arange(n), keys
    )

  return Method(
    init=init,
    loss=loss_lib.make_loss(encoder, decoder, model_cfg),
    predict=predict,
    param_count_note=PARAM_COUNT_NOTE,
    step_loss=step_loss,
  )
