"""Probability-domain distillation: softening operators, their axioms, and anchored meta-teachers.

Papers: Flouro & Chadwick, "Sparse Knowledge Distillation: A Mathematical Framework for
Probability-Domain Temperature Scaling and Multi-Stage Compression" (arXiv 2601.03195), and
"Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge Refinement"
(arXiv 2601.13100); Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
(arXiv 1503.02531, 2015). `operators` holds the operator families and meta-teacher operators (pure,
jittable); `axioms` (softening operators, top-k teachers) and `meta_axioms` (meta-teachers, KL
contraction) hold their axioms as executable checks. `student` holds frozen-checkpoint loading,
magnitude-pruning masks and the KD loss; `build(config)` below is the method the trainer runs for
one distillation stage; `stages.run` (`run_stages`, what launch/train.py calls for a config with a
`stages` section) composes the trainer into teacher -> multi-stage compression or recursive
generations.

Method 'distill', one stage (config.model: see `default_model_config`):
  loss = kd_weight * T^2 * mean_B KL(F_T(t) || softmax(z_s / T)) + ce_weight * CE(z_s, y)
with t = p_teacher (source='teacher') or t = G(p_base, q_prev, alpha) (source='meta': the
anchored meta-teacher, jaxrepr's formalisation of the anchoring in the abstract of arXiv
2601.13100). Teacher, base teacher and previous student are frozen checkpoints loaded at build
time; their parameters are closed-over constants of the loss, so only the student trains. The T^2
factor and two-sided softening are Hinton et al. 2015, §2 ("Distillation"); the Flouro & Chadwick
abstracts leave open how a softening operator enters a training loss, so both are config fields.
"""

import functools
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from jaxrepr.methods.base import Method
from jaxrepr.methods.classifier import model as classifier_model
from jaxrepr.methods.distill import student as student_lib
from jaxrepr.methods.distill.axioms import CheckResult, check_family, entropy, kl
from jaxrepr.methods.distill.meta_axioms import (
  check_contraction,
  check_meta_teacher,
  contraction_ratio,
)
from jaxrepr.methods.distill.operators import (
  FAMILIES,
  META_TEACHERS,
  OperatorFamily,
  aggregate_teachers,
  anchored_geometric,
  anchored_mixture,
  geometric,
  get_family,
  get_meta_teacher,
  hard_label_teacher,
  hybrid,
  mixture,
  power,
  realisable_recursion,
  soften_logits,
  soften_revealed,
  soften_top_k,
  top_k_truncate,
)
from jaxrepr.errors import ConfigError

__all__ = [
  "CheckResult",
  "check_contraction",
  "check_family",
  "check_meta_teacher",
  "contraction_ratio",
  "entropy",
  "kl",
  "FAMILIES",
  "META_TEACHERS",
  "OperatorFamily",
  "aggregate_teachers",
  "anchored_geometric",
  "anchored_mixture",
  "geometric",
  "get_family",
  "get_meta_teacher",
  "hard_label_teacher",
  "hybrid",
  "mixture",
  "power",
  "realisable_recursion",
  "soften_logits",
  "soften_revealed",
  "soften_top_k",
  "top_k_truncate",
  "build",
  "default_model_config",
  "soft_target",
]


# ------------------------------------------------------------------------------------ training
# `build(config)` turns `config.model` (see `default_model_config`) into a Method. Batches are the
# classifier's: {'image': float32 (B, H, W, C), 'label': int32 (B,)}; `predict` returns logits.

SOURCES = ("teacher", "meta")


def default_model_config() -> ml_collections.ConfigDict:
  """Fields of `config.model` for method 'distill'.

  student          a classifier model config (jaxrepr.methods.classifier): the trained network.
  source           'teacher': the target is F_T(p_teacher); 'meta': F_T(G(p_base, q_prev, alpha)).
  teacher_workdir  workdir of the frozen teacher (for 'meta': the base teacher p*).
  previous_workdir workdir of the frozen previous student q_k ('meta' only).
  meta_teacher     a key of operators.META_TEACHERS; alpha its anchoring weight.
  family           a key of operators.FAMILIES; temperature its T; top_k truncates the teacher to
                   its k largest classes before softening (black-box top-k teacher).
  soften_student   divide the student's logits by T too (usual KD); False fits softmax(z) to F_T(t).
  t2_scaling       multiply the KL by T^2 (keeps gradient scale across T; only with soften_student).
  kd_weight, ce_weight  weights of the KL and of the hard-label cross-entropy.
  init_workdir     start from this run's parameters (same student architecture required).
  sparsity         magnitude-prune the init_workdir parameters to this kernel sparsity and train
                   under that fixed mask (needs init_workdir).
  """
  return ml_collections.ConfigDict(
    dict(
      student=ml_collections.ConfigDict(
        dict(arch="mlp", channels=(32, 64), hidden=(64,), num_classes=10, dropout=0.0)
      ),
      source="teacher",
      teacher_workdir=config_dict.placeholder(str),
      previous_workdir=config_dict.placeholder(str),
      meta_teacher="anchored_mixture",
      alpha=0.5,
      family="power",
      temperature=1.0,
      top_k=config_dict.placeholder(int),
      soften_student=True,
      t2_scaling=True,
      kd_weight=1.0,
      ce_weight=0.0,
      init_workdir=config_dict.placeholder(str),
      sparsity=0.0,
    )
  )


def _require(ok: bool, field: str, value, rule: str) -> None:
  if not ok:
    raise ConfigError(f"config.model.{field}={value!r}: {rule}")


def _check_model_config(cfg) -> None:
  _require(cfg.source in SOURCES, "source", cfg.source, f"must be one of {SOURCES}")
  needs_teacher = cfg.kd_weight > 0
  _require(
    not needs_teacher or bool(cfg.teacher_workdir),
    "teacher_workdir",
    cfg.teacher_workdir,
    "must name a finished classifier/distill workdir when kd_weight > 0",
  )
  if cfg.source == "meta" and needs_teacher:
    _require(
      bool(cfg.previous_workdir),
      "previous_workdir",
      cfg.previous_workdir,
      "source='meta' needs the previous student's workdir",
    )
    get_meta_teacher(cfg.meta_teacher)
    _require(0.0 <= cfg.alpha <= 1.0, "alpha", cfg.alpha, "must lie in [0, 1]")
  family = get_family(cfg.family)
  _require(
    family.in_domain(cfg.temperature),
    "temperature",
    cfg.temperature,
    f"lies outside the domain of family {cfg.family!r}",
  )
  _require(
    cfg.kd_weight >= 0 and cfg.ce_weight >= 0 and cfg.kd_weight + cfg.ce_weight > 0,
    "kd_weight",
    (cfg.kd_weight, cfg.ce_weight),
    "weights must be >= 0, not both 0",
  )
  if cfg.top_k is not None:
    _require(
      1 <= cfg.top_k <= cfg.student.num_classes,
      "top_k",
      cfg.top_k,
      f"must lie in [1, {cfg.student.num_classes}]",
    )
  _require(0.0 <= cfg.sparsity < 1.0, "sparsity", cfg.sparsity, "must lie in [0, 1)")
  _require(
    cfg.sparsity == 0.0 or bool(cfg.init_workdir),
    "sparsity",
    cfg.sparsity,
    "magnitude pruning needs trained weights: set config.model.init_workdir",
  )


def _same_architecture(a, b) -> bool:
  keys = ("arch", "hidden", "num_classes") + (("channels",) if a.arch == "cnn" else ())
  return all(
    tuple(a[k]) == tuple(b[k]) if k in ("hidden", "channels") else a[k] == b[k] for k in keys
  )


def _frozen_logits(frozen: student_lib.Frozen):
  """images -> logits of a frozen network (its params are closed-over numpy constants)."""
  model = classifier_model.make_model(frozen.model_cfg)

  def logits(images):
    return classifier_model.logits_fn(model, frozen.params, images, None, train=False)

  return logits


def soft_target(
  cfg: ml_collections.ConfigDict, z_t_BxV: jax.Array, z_prev_BxV: jax.Array | None = None
) -> jax.Array:
  """The KD target F_T(t) of `config.model` from teacher logits (and, for source='meta', the
  previous student's logits): t = p_teacher or G(p_teacher, q_prev, alpha), truncated to the top k
  classes when `top_k` is set, then softened by the configured family. Reads cfg.family,
  temperature (a float, or a traced scalar under jit), top_k, meta_teacher and alpha."""
  family, T = get_family(cfg.family), cfg.temperature
  if z_prev_BxV is None and cfg.top_k is None and cfg.family == "power":
    return soften_logits(z_t_BxV, T)  # exact P_T(softmax(z)) without forming p
  t_BxV = jax.nn.softmax(z_t_BxV, axis=-1)
  if z_prev_BxV is not None:
    q_BxV = jax.nn.softmax(z_prev_BxV, axis=-1)
    t_BxV = get_meta_teacher(cfg.meta_teacher)(t_BxV, q_BxV, cfg.alpha)
  if cfg.top_k is not None:
    return soften_top_k(family, t_BxV, T, cfg.top_k)
  return family(t_BxV, T)


def _target_of_images(cfg, teacher_logits, previous_logits, images) -> jax.Array:
  z_t_BxV = teacher_logits(images).astype(jnp.float32)
  z_prev_BxV = None if previous_logits is None else previous_logits(images).astype(jnp.float32)
  return soft_target(cfg, z_t_BxV, z_prev_BxV)


def _target_fn(cfg) -> Callable[[jax.Array], jax.Array] | None:
  """images -> KD target, with the frozen teacher(s) loaded now; None without a KD term."""
  if cfg.kd_weight <= 0:
    return None
  teacher_logits = _frozen_logits(student_lib.load_frozen(cfg.teacher_workdir))
  previous_logits = None
  if cfg.source == "meta":
    previous_logits = _frozen_logits(student_lib.load_frozen(cfg.previous_workdir))
  return functools.partial(_target_of_images, cfg, teacher_logits, previous_logits)


def _warm_start(cfg) -> tuple[Any, Any]:
  """(initial params, pruning masks) from `init_workdir`; (None, None) for a fresh student."""
  if not cfg.init_workdir:
    return None, None
  start = student_lib.load_frozen(cfg.init_workdir)
  if not _same_architecture(start.model_cfg, cfg.student):
    raise ConfigError(
      f"config.model.init_workdir={cfg.init_workdir!r} holds a "
      f"{start.model_cfg.to_dict()} model, not the student "
      f"{cfg.student.to_dict()}"
    )
  masks = student_lib.prune_masks(start.params, cfg.sparsity) if cfg.sparsity > 0 else None
  return student_lib.apply_masks(start.params, masks), masks


def _init(model, init_params, rng, batch):
  if init_params is not None:
    return jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), init_params)
  return model.init(rng, batch["image"].astype(jnp.float32), False)["params"]


def _student_logits(model, masks, params, images, rng, train: bool) -> jax.Array:
  # Masked entries get zero gradient, so a pruned student stays sparse (see `student`).
  return classifier_model.logits_fn(
    model, student_lib.apply_masks(params, masks), images, rng, train=train
  )


def _loss(cfg, model, masks, target_fn, params, batch, rng):
  z_BxV = _student_logits(model, masks, params, batch["image"], rng, train=True)
  if target_fn is None:
    target_BxV = jax.nn.one_hot(batch["label"], cfg.student.num_classes)
  else:
    target_BxV = jax.lax.stop_gradient(target_fn(batch["image"]))
  return student_lib.kd_loss(
    target_BxV,
    z_BxV,
    batch["label"],
    temperature=float(cfg.temperature),
    soften_student=cfg.soften_student,
    t2_scaling=cfg.t2_scaling,
    kd_weight=cfg.kd_weight if target_fn is not None else 0.0,
    ce_weight=cfg.ce_weight,
  )


def _predict(model, masks, params, batch, rng):
  del rng
  return _student_logits(model, masks, params, batch["image"], None, train=False)


def build(config: ml_collections.ConfigDict) -> Method:
  """A student trained against a frozen teacher's (or meta-teacher's) softened distribution."""
  cfg = config.model
  _check_model_config(cfg)
  model = classifier_model.make_model(cfg.student)
  target_fn = _target_fn(cfg)
  init_params, masks = _warm_start(cfg)
  note = f"kernel sparsity {cfg.sparsity:g} under a fixed magnitude mask" if masks else ""
  return Method(
    init=functools.partial(_init, model, init_params),
    loss=functools.partial(_loss, cfg, model, masks, target_fn),
    predict=functools.partial(_predict, model, masks),
    param_count_note=note,
  )


def run_stages(config: ml_collections.ConfigDict, workdir: str, train_and_evaluate):
  """The whole experiment of a config with `stages`: teacher, then every stage (`stages.run`), each
  one `train_and_evaluate(stage_config, stage_workdir)` call of the trainer that hands it in."""
  from jaxrepr.methods.distill import stages  # plotting and report code only a staged run needs

  return stages.run(config, workdir, train_and_evaluate)
