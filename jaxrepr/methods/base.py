"""The method contract: everything the trainer, the config checks and the evaluators know about a
method, and nothing more. A new method copies `jaxrepr/methods/classifier/` (the smallest one).

Required: a package `jaxrepr/methods/<name>/` whose `__init__.py` defines

    build(config: ConfigDict) -> Method

`config.method = '<name>'` selects it (jaxrepr/registry.py). `build` reads `config.model` (and
whatever of `config.data` the method needs to know, e.g. sizes) and returns pure functions:

    Method.init(rng, batch) -> params              Flax `.init`; `batch` is an example batch
    Method.loss(params, batch, rng) -> (scalar, {name: scalar})   pure and jittable
    Method.predict(params, batch, rng) -> outputs  any pytree; what evaluators call
    Method.param_count_note: str                   printed next to the parameter count
    Method.embed(params, batch) -> (B, F) features  optional (None): frozen features for probes
    Method.swept_loss(params, batch, rng, coefficients) -> (scalar, {name: scalar})
                                                   optional (None): `loss` with the coefficients
                                                   of the package's SWEEPABLE given as values
    Method.step_loss(params, batch, rng, step) -> (scalar, {name: scalar})
                                                   optional (None): the loss of train step `step`
                                                   (int32 scalar, traced), for a loss that changes
                                                   during training; the train step calls it instead
                                                   of `loss` when set

The trainer jits `loss` under `jax.value_and_grad` and the evaluators jit `predict`; both see global
batches whose leading axis is sharded over the mesh's batch axes, so a loss that averages over the
batch gives the same number on one device and on many. A method never imports a data module
(tests/core/test_import_rules.py): what it needs of the data reaches it through `config.data`, the
batches, or a neutral module both sides may import.

Optional module-level hooks (the only other names the framework reads from a method package; read
them through the accessors below, never with getattr/hasattr):

    PRECISIONS: tuple[str, ...]
        the `config.precision` values the method implements (default ('float32',)); the names are
        those of jaxrepr/nn/precision.py. Read by jaxrepr/config.py:validate.
    run_stages(config, workdir, train_and_evaluate) -> dict
        a multi-stage experiment (distillation generations): runs when the config has a `stages`
        section, and calls the `train_and_evaluate(config, workdir)` it is handed (the trainer's
        own) once per stage, each stage in its own sub-workdir so that it resumes on its own; the
        method never imports the trainer. Called by jaxrepr/train.py:run_experiment.
    default_model_config(*args) -> ConfigDict
        the method's `config.model` defaults, for config files (configs/<name>.py call it
        directly; the framework itself never does).
    SWEEPABLE: tuple[str, ...]
        config fields (e.g. 'model.eta') that are loss coefficients: numbers that change what the
        loss computes, not shapes or the program's structure. `config.sweep` trains their values
        as replicas of one program (jaxrepr/replicas.py) instead of one program per value; the
        replica step passes each replica's values to `Method.swept_loss` as
        `coefficients={'model.eta': float32 scalar}` (the fields swept in that program only; a
        field left out takes its config value). `swept_loss(p, b, r, {})` must compute exactly
        `loss(p, b, r)`. Default (): every method field changes the program. Read by
        jaxrepr/replicas.py.

Batches of example ids. A data module may yield only `{'example_id': int32 (B,)}` and leave the
examples to be generated on device inside `loss`/`predict` (jaxrepr/data/sets.py and the set_tasks
and enroll methods): example `i` then depends only on (`generation_key(config)`, i), never on the
device count, the step's RNG or a resume. A batch that also carries 'generation_seed' int32 (B,)
(training batches do) is generated from that seed instead (`batch_generation_key`): replicas of
several seeds trained as one program (jaxrepr/replicas.py) share the method but not the seed.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any
from collections.abc import Callable, Mapping

import jax
import ml_collections

Batch = dict[str, jax.Array]
Params = Any
Metrics = dict[str, jax.Array]

DEFAULT_PRECISIONS = ("float32",)


@dataclasses.dataclass(frozen=True)
class Method:
  """Pure functions that define a method.

  Attributes:
    init: (rng, batch) -> params. `batch` is an example batch (any batch size).
    loss: (params, batch, rng) -> (scalar loss, {name: scalar metric}). Pure and jittable.
    predict: (params, batch, rng) -> outputs (any pytree). What evaluators call.
    param_count_note: optional text printed next to the parameter count at start-up.
    embed: optional (params, batch) -> (B, F) float features, pure and jittable; what the
      linear-probe evaluator fits on (None: the method has no embedding).
    swept_loss: optional (params, batch, rng, coefficients) -> `loss`'s output, where
      `coefficients` maps fields of the package's SWEEPABLE to (possibly traced) scalars that
      replace their config values; None when the package sweeps no coefficient.
    step_loss: optional (params, batch, rng, step) -> `loss`'s output, where `step` is the train
      state's step counter (a traced int32 scalar): a loss that changes with the step, e.g. a
      schedule of phases chosen inside the one compiled step. None: every step calls `loss`.
  """

  init: Callable[[jax.Array, Batch], Params]
  loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, Metrics]]
  predict: Callable[[Params, Batch, jax.Array], Any]
  param_count_note: str = ""
  embed: Callable[[Params, Batch], jax.Array] | None = None
  swept_loss: (
    Callable[[Params, Batch, jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, Metrics]] | None
  ) = None
  step_loss: Callable[[Params, Batch, jax.Array, jax.Array], tuple[jax.Array, Metrics]] | None = (
    None
  )


def supported_precisions(module: ModuleType) -> tuple[str, ...]:
  """The `config.precision` values the method package implements (its `PRECISIONS` hook)."""
  return tuple(getattr(module, "PRECISIONS", DEFAULT_PRECISIONS))


def sweepable_fields(module: ModuleType) -> tuple[str, ...]:
  """The config fields the method package lets a sweep vary inside one program (its `SWEEPABLE`
  hook): loss coefficients that its `Method.swept_loss` takes as values."""
  return tuple(getattr(module, "SWEEPABLE", ()))


def stages_runner(module: ModuleType) -> Callable[..., dict] | None:
  """The method package's multi-stage runner `run_stages(config, workdir, train_and_evaluate)`, or
  None."""
  return getattr(module, "run_stages", None)


def generation_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The root key of data generated on device from example ids: `config.data.seed`, or
  `config.seed` when that is unset (a placeholder)."""
  seed = config.data.get("seed")  # data modules without generated examples have no data.seed
  if seed is None:
    seed = config.seed
  return jax.random.key(seed)


def batch_generation_key(batch: Batch, default: jax.Array) -> jax.Array:
  """The generation key of `batch`: from its 'generation_seed' (every row holds the same seed),
  else `default` (the method's `generation_key(config)`)."""
  if "generation_seed" not in batch:
    return default
  return jax.random.key(batch["generation_seed"][0])
