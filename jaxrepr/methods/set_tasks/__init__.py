"""The Set Transformer paper's set tasks (Lee et al., ICML 2019): amortized MoG clustering and max
regression, with the Set Transformer (reference or paper mode) or the DeepSets baseline.

The task comes from `config.data.task` ('mog' or 'max'; the generator and its fields: generate.py,
their defaults: `jaxrepr.data.sets.default_config`); the model's hyper-parameters from
`config.model` (see `default_model_config`).

Batches: either `{'example_id': int32 (B,)}` from `jaxrepr.data.sets.train_iterator`, in which case
the sets are generated on device inside `loss`/`predict` (generate.py) from `fold_in(key(data
seed), example_id)` (the step RNG passed by the trainer is not used for data, so the numbers depend
only on the seed and the global example ids: one device and eight give the same loss, and a resumed
run sees the same sets), or explicit padded sets `{'x': (B, n_max, d), 'mask': (B, n_max)}` (plus
`'y': (B,)` for max regression) from a user's data.

Padding costs compute, so `loss` and `predict` cut the padded sets to the smallest of
`config.model.length_buckets` lengths that holds the batch's largest set (`jaxrepr.nn.bucketing`:
a `lax.switch` in the one compiled program, with a custom VJP so that only the chosen branch runs
forward and backward). Masked blocks make the cut exact up to float rounding.

`predict` returns, for 'mog', the predicted mixtures {'pi', 'mu', 'sigma'} and per-set
log-likelihoods 'll' (LL0), 'll1' (after one EM step) and, for generated sets, 'oracle_ll'; for
'max', {'max': (B,)} and, when targets are known, 'abs_error'.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxrepr.methods.base import Batch, Method, Params, batch_generation_key, generation_key
from jaxrepr.methods.set_tasks import generate
from jaxrepr.methods.set_tasks import loss as loss_lib
from jaxrepr.methods.set_tasks import model as model_lib
from jaxrepr.nn import bucketing
from jaxrepr.nn.set_attention import MODES
from jaxrepr.errors import ConfigError

ARCHS = ("set_transformer", "deepsets")
_SET_AXIS_KEYS = ("x", "mask", "labels")  # batch entries whose axis 1 is the padded set axis


def default_model_config(task: str = "mog") -> ml_collections.ConfigDict:
  """The reference code's sizes: run.py for 'mog' (423,172 params), the notebook for 'max'
  (37,953)."""
  cfg = ml_collections.ConfigDict()
  cfg.arch = "set_transformer"
  cfg.mode = "reference"
  cfg.ln = ml_collections.config_dict.placeholder(bool)  # unset: reference off, paper pre-LN on
  cfg.pma_rff = ml_collections.config_dict.placeholder(bool)  # unset: reference off, paper on
  cfg.torch_init = ml_collections.config_dict.placeholder(bool)  # unset: mode == 'reference'
  cfg.num_heads = 4
  if task == "mog":
    cfg.dim_hidden = 128
    cfg.num_inds = 32
    cfg.encoder = "isab"
    cfg.num_decoder_sabs = 2  # run.py; the paper's supp. Table 4 has 1
    cfg.head = "isotropic"  # run.py; the paper's head is 'diagonal' (1 + 2*2 outputs)
  elif task == "max":
    cfg.dim_hidden = 64
    cfg.num_sabs = 2
  else:
    raise ConfigError(f"task must be one of {generate.TASKS}, got {task!r}")
  # Compute only: the loss and predict cut padded sets to the smallest of this many lengths in
  # [data.min_size, data.max_size] that holds the batch (jaxrepr/nn/bucketing.py); 1 = no cut.
  cfg.length_buckets = 4 if task == "mog" else 1
  cfg.pooling = "max"  # DeepSets only
  cfg.num_phi_layers = 4  # DeepSets only
  return cfg


def _validate(config: ml_collections.ConfigDict) -> None:
  m = config.model
  if m.arch not in ARCHS:
    raise ConfigError(f"config.model.arch must be one of {ARCHS}, got {m.arch!r}")
  if m.mode not in MODES:
    raise ConfigError(f"config.model.mode must be one of {MODES}, got {m.mode!r}")
  if m.dim_hidden % m.num_heads:
    raise ConfigError(
      f"config.model.dim_hidden={m.dim_hidden} must divide by config.model.num_heads={m.num_heads}"
    )
  if m.length_buckets < 1:
    raise ConfigError(f"config.model.length_buckets must be >= 1, got {m.length_buckets}")
  if m.pooling not in model_lib.POOLINGS:
    raise ConfigError(
      f"config.model.pooling must be one of {model_lib.POOLINGS}, got {m.pooling!r}"
    )
  if config.data.task == "mog":
    if m.arch == "set_transformer" and m.encoder not in model_lib.ENCODERS:
      raise ConfigError(
        f"config.model.encoder must be one of {model_lib.ENCODERS}, got {m.encoder!r}"
      )
    loss_lib.head_width(config.data.dim, m.head)  # raises on a bad config.model.head


def _make_model(config: ml_collections.ConfigDict) -> nn.Module:
  m, d = config.model, config.data
  attn = dict(
    num_heads=m.num_heads,
    mode=m.mode,
    ln=m.ln,
    pma_rff=m.pma_rff,
    torch_init=m.torch_init,
  )
  if d.task == "mog":
    width = loss_lib.head_width(d.dim, m.head)
    if m.arch == "deepsets":
      return model_lib.DeepSets(m.dim_hidden, m.num_phi_layers, m.pooling, d.num_components * width)
    return model_lib.MoGClusterer(
      d.num_components,
      width,
      m.dim_hidden,
      num_inds=m.num_inds,
      encoder=m.encoder,
      num_decoder_sabs=m.num_decoder_sabs,
      **attn,
    )
  if m.arch == "deepsets":
    return model_lib.DeepSets(m.dim_hidden, m.num_phi_layers, m.pooling, 1)
  return model_lib.MaxRegressor(m.dim_hidden, num_sabs=m.num_sabs, **attn)


# --------------------------------------------------------------------------------- pure pieces
# `build` binds the config-derived arguments (model, data config, key, bucket lengths) with
# functools.partial; each piece is a plain function of its arguments. (No piece is named `loss`:
# that would shadow the loss submodule as an attribute of this package.)
def materialize(
  data_cfg: ml_collections.ConfigDict, root: jax.Array, batch: Batch
) -> dict[str, jax.Array]:
  """The batch's padded sets: generated from its 'example_id's, or the explicit 'x' and 'mask'."""
  if "x" in batch:
    if "mask" not in batch:
      raise ValueError("a batch with explicit sets 'x' needs a boolean 'mask' (B, n_max)")
    return dict(batch)
  if "example_id" not in batch:
    raise ValueError(f"set_tasks batches need 'example_id' or 'x' and 'mask'; got {sorted(batch)}")
  return generate.generate(data_cfg, batch_generation_key(batch, root), batch["example_id"])


def apply_model(
  model: nn.Module,
  arch: str,
  data_cfg: ml_collections.ConfigDict,
  params: Params,
  data: dict[str, jax.Array],
) -> jax.Array:
  """The model's raw outputs: (B, K, head width) for 'mog', (B,) for 'max'."""
  out = model.apply(params, data["x"], data["mask"])
  if data_cfg.task == "mog" and arch == "deepsets":
    out = out.reshape(out.shape[0], data_cfg.num_components, -1)
  elif data_cfg.task == "max" and arch == "deepsets":
    out = out[:, 0]
  return out


def init_params(
  model: nn.Module, data_cfg: ml_collections.ConfigDict, rng: jax.Array, batch: Batch
) -> Params:
  del batch  # shapes come from the config: sets are padded to data.max_size
  in_dim = data_cfg.dim if data_cfg.task == "mog" else 1
  x = jnp.zeros((1, data_cfg.max_size, in_dim), jnp.float32)
  return model.init(rng, x, jnp.ones((1, data_cfg.max_size), bool))


def valid_reach(data: dict[str, jax.Array]) -> jax.Array:
  """How far valid elements reach (not how many there are: a user's mask may have gaps)."""
  n_max = data["mask"].shape[1]
  return jnp.max(jnp.where(data["mask"], jnp.arange(1, n_max + 1)[None, :], 0))


def cut(data: dict[str, jax.Array], length: int) -> dict[str, jax.Array]:
  """The sets cut to their first `length` elements."""
  return {k: v[:, :length] if k in _SET_AXIS_KEYS else v for k, v in data.items()}


def is_bucketed(lengths: tuple[int, ...], data: dict[str, jax.Array]) -> bool:
  # a user's explicit sets may be padded to another length: then they run as given
  return len(lengths) > 1 and data["x"].shape[1] == lengths[-1]


def loss_of(
  apply: Callable, task: str, head: str, params: Params, data: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, Any]]:
  """The task's loss on materialized sets; `apply` is `apply_model` with the model bound."""
  out = apply(params, data)
  if task == "mog":
    return loss_lib.mog_loss(out, data, head)
  return loss_lib.max_regression_loss(out, data["y"])


def predict_of(
  apply: Callable, task: str, head: str, params: Params, data: dict[str, jax.Array]
) -> dict[str, jax.Array]:
  """The predictions on materialized sets (module docstring)."""
  out = apply(params, data)
  if task == "max":
    pred = {"max": out}
    if "y" in data:
      pred["abs_error"] = jnp.abs(out - data["y"])
    return pred
  x, mask = data["x"], data["mask"]
  pred = loss_lib.mog_head(out, x.shape[-1], head)
  ll = lambda p, eps=1e-10: loss_lib.per_set_mean(
    loss_lib.mog_log_likelihood(x, p["pi"], p["mu"], p["sigma"], eps), mask
  )
  pred["num_points"] = jnp.sum(mask.astype(jnp.int32), axis=1)
  pred["ll"] = ll(pred)
  pred["ll1"] = ll(
    loss_lib.em_step(x, mask, pred["pi"], pred["mu"], pred["sigma"], head == "isotropic")
  )
  if "pi" in data:
    pred["oracle_ll"] = ll(data, 0.0)
  return pred


def batch_loss(
  materialize_fn: Callable,
  lengths: tuple[int, ...],
  plain_loss: Callable,
  bucketed_loss: Callable,
  params: Params,
  batch: Batch,
  rng: jax.Array,
) -> tuple[jax.Array, dict[str, Any]]:
  """Method.loss, with the config-derived pieces bound by `build`."""
  del rng  # no stochastic layers; data randomness comes from the example ids (module docstring)
  data = materialize_fn(batch)
  return (bucketed_loss if is_bucketed(lengths, data) else plain_loss)(params, data)


def batch_predict(
  materialize_fn: Callable,
  lengths: tuple[int, ...],
  predict_fn: Callable,
  params: Params,
  batch: Batch,
  rng: jax.Array,
) -> dict[str, jax.Array]:
  """Method.predict, with the config-derived pieces bound by `build`."""
  del rng
  data = materialize_fn(batch)
  if is_bucketed(lengths, data):
    return bucketing.bucketed_call(lambda d: predict_fn(params, d), lengths, valid_reach, cut)(data)
  return predict_fn(params, data)


def build(config: ml_collections.ConfigDict) -> Method:
  generate.validate(config.data)
  _validate(config)
  data_cfg, m = config.data, config.model
  task, head = data_cfg.task, m.get("head", "isotropic")
  model = _make_model(config)
  materialize_fn = functools.partial(materialize, data_cfg, generation_key(config))
  apply = functools.partial(apply_model, model, m.arch, data_cfg)
  lengths = bucketing.bucket_lengths(data_cfg.min_size, data_cfg.max_size, m.length_buckets)
  plain_loss = functools.partial(loss_of, apply, task, head)
  bucketed_loss = bucketing.bucketed_loss(plain_loss, lengths, valid_reach, cut)
  note = (
    f"{m.arch} ({m.mode} mode) for set task {task!r}; the reference "
    "code's sizes give 423,172 params (MoG) and 37,953 (max regression)"
  )
  return Method(
    init=functools.partial(init_params, model, data_cfg),
    loss=functools.partial(batch_loss, materialize_fn, lengths, plain_loss, bucketed_loss),
    predict=functools.partial(
      batch_predict, materialize_fn, lengths, functools.partial(predict_of, apply, task, head)
    ),
    param_count_note=note,
  )
