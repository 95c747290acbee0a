"""Probability-domain distillation: softening operators, their axioms, and anchored meta-teachers.

Flouro & Chadwick, "Sparse Knowledge Distillation" (arXiv 2601.03195) and "Recursive
Meta-Distillation" (arXiv 2601.13100). `operators` holds the operator families and meta-teacher
operators (pure, jittable); `axioms` holds the axioms as executable checks and the KL / contraction
measurements. `student` holds frozen-checkpoint loading, magnitude-pruning masks and the KD loss;
`build(config)` below is the method the trainer runs for one distillation stage; `stages.run`
(`run_stages`, what launch/train.py calls for a config with a `stages` section) composes the
trainer into teacher -> multi-stage compression or recursive generations.

Method 'distill', one stage (config.model: see `default_model_config`):
  loss = kd_weight * T^2 * mean_B KL(F_T(t) || softmax(z_s / T)) + ce_weight * CE(z_s, y)
with t = p_teacher (source='teacher') or t = G(p_base, q_prev, alpha) (source='meta', the
anchored meta-teacher of arXiv 2601.13100, method sheet sec. 3). Teacher, base teacher and previous
student are frozen checkpoints loaded at build time; their parameters are closed-over constants of
the loss, so only the student trains. The T^2 factor and two-sided softening are common KD practice
(Hinton et al. 2015), not from the two papers (sheet sec. 4 leaves them open); both are config fields.
"""

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from jaxrepr.methods.base import Method
from jaxrepr.methods.classifier import model as classifier_model
from jaxrepr.methods.distill import student as student_lib
from jaxrepr.methods.distill.axioms import (
    CheckResult,
    check_contraction,
    check_family,
    check_meta_teacher,
    contraction_ratio,
    entropy,
    kl,
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
    "CheckResult", "check_contraction", "check_family", "check_meta_teacher", "contraction_ratio",
    "entropy", "kl", "FAMILIES", "META_TEACHERS", "OperatorFamily", "aggregate_teachers",
    "anchored_geometric", "anchored_mixture", "geometric", "get_family", "get_meta_teacher",
    "hard_label_teacher", "hybrid", "mixture", "power", "realisable_recursion", "soften_logits",
    "soften_revealed", "soften_top_k", "top_k_truncate", "build", "default_model_config",
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
  return ml_collections.ConfigDict(dict(
      student=ml_collections.ConfigDict(dict(arch="mlp", channels=(32, 64), hidden=(64,), num_classes=10,
                                   dropout=0.0)),
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
  ))


def _require(ok: bool, field: str, value, rule: str) -> None:
  if not ok:
    raise ConfigError(f"config.model.{field}={value!r}: {rule}")


def _check_model_config(cfg) -> None:
  _require(cfg.source in SOURCES, "source", cfg.source, f"must be one of {SOURCES}")
  needs_teacher = cfg.kd_weight > 0
  _require(not needs_teacher or bool(cfg.teacher_workdir), "teacher_workdir", cfg.teacher_workdir,
           "must name a finished classifier/distill workdir when kd_weight > 0")
  if cfg.source == "meta" and needs_teacher:
    _require(bool(cfg.previous_workdir), "previous_workdir", cfg.previous_workdir,
             "source='meta' needs the previous student's workdir")
    get_meta_teacher(cfg.meta_teacher)
    _require(0.0 <= cfg.alpha <= 1.0, "alpha", cfg.alpha, "must lie in [0, 1]")
  family = get_family(cfg.family)
  _require(family.in_domain(cfg.temperature), "temperature", cfg.temperature,
           f"lies outside the domain of family {cfg.family!r}")
  _require(cfg.kd_weight >= 0 and cfg.ce_weight >= 0 and cfg.kd_weight + cfg.ce_weight > 0,
           "kd_weight", (cfg.kd_weight, cfg.ce_weight), "weights must be >= 0, not both 0")
  if cfg.top_k is not None:
    _require(1 <= cfg.top_k <= cfg.student.num_classes, "top_k", cfg.top_k,
             f"must lie in [1, {cfg.student.num_classes}]")
  _require(0.0 <= cfg.sparsity < 1.0, "sparsity", cfg.sparsity, "must lie in [0, 1)")
  _require(cfg.sparsity == 0.0 or bool(cfg.init_workdir), "sparsity", cfg.sparsity,
           "magnitude pruning needs trained weights: set config.model.init_workdir")


def _same_architecture(a, b) -> bool:
  keys = ("arch", "hidden", "num_classes") + (("channels",) if a.arch == "cnn" else ())
  return all(tuple(a[k]) == tuple(b[k]) if k in ("hidden", "channels") else a[k] == b[k]
             for k in keys)


def _frozen_logits(frozen: student_lib.Frozen):
  """images -> logits of a frozen network (its params are closed-over numpy constants)."""
  model = classifier_model.make_model(frozen.model_cfg)

  def logits(images):
    return classifier_model.logits_fn(model, frozen.params, images, None, train=False)

  return logits


def build(config: ml_collections.ConfigDict) -> Method:
  """A student trained against a frozen teacher's (or meta-teacher's) softened distribution."""
  cfg = config.model
  _check_model_config(cfg)
  model = classifier_model.make_model(cfg.student)
  family = get_family(cfg.family)
  T = float(cfg.temperature)

  target_fn = None
  if cfg.kd_weight > 0:
    teacher_logits = _frozen_logits(student_lib.load_frozen(cfg.teacher_workdir))
    prev_logits = None
    if cfg.source == "meta":
      prev_logits = _frozen_logits(student_lib.load_frozen(cfg.previous_workdir))
      meta = get_meta_teacher(cfg.meta_teacher)

    def target_fn(images):
      z_t_BxV = teacher_logits(images).astype(jnp.float32)
      if prev_logits is None and cfg.top_k is None and cfg.family == "power":
        return soften_logits(z_t_BxV, T)  # exact P_T(softmax(z)) without forming p
      t_BxV = jax.nn.softmax(z_t_BxV, axis=-1)
      if prev_logits is not None:
        q_BxV = jax.nn.softmax(prev_logits(images).astype(jnp.float32), axis=-1)
        t_BxV = meta(t_BxV, q_BxV, cfg.alpha)
      if cfg.top_k is not None:
        return soften_top_k(family, t_BxV, T, cfg.top_k)
      return family(t_BxV, T)

  masks, init_params = None, None
  if cfg.init_workdir:
    start = student_lib.load_frozen(cfg.init_workdir)
    if not _same_architecture(start.model_cfg, cfg.student):
      raise ConfigError(f"config.model.init_workdir={cfg.init_workdir!r} holds a "
                        f"{start.model_cfg.to_dict()} model, not the student "
                        f"{cfg.student.to_dict()}")
    if cfg.sparsity > 0:
      masks = student_lib.prune_masks(start.params, cfg.sparsity)
    init_params = student_lib.apply_masks(start.params, masks)

  def init(rng, batch):
    if init_params is not None:
      return jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), init_params)
    return model.init(rng, batch["image"].astype(jnp.float32), False)["params"]

  def logits(params, images, rng, train):
    return classifier_model.logits_fn(model, student_lib.apply_masks(params, masks), images, rng,
                                       train=train)

  def loss(params, batch, rng):
    z_BxV = logits(params, batch["image"], rng, train=True)
    if target_fn is None:
      target_BxV = jax.nn.one_hot(batch["label"], cfg.student.num_classes)
    else:
      target_BxV = jax.lax.stop_gradient(target_fn(batch["image"]))
    return student_lib.kd_loss(target_BxV, z_BxV, batch["label"], temperature=T,
                            soften_student=cfg.soften_student, t2_scaling=cfg.t2_scaling,
                            kd_weight=cfg.kd_weight if target_fn is not None else 0.0,
                            ce_weight=cfg.ce_weight)

  def predict(params, batch, rng):
    del rng
    return logits(params, batch["image"], None, train=False)

  note = f"kernel sparsity {cfg.sparsity:g} under a fixed magnitude mask" if masks else ""
  return Method(init=init, loss=loss, predict=predict, param_count_note=note)


def run_stages(config: ml_collections.ConfigDict, workdir: str):
  """The whole experiment of a config with `stages`: teacher, then every stage (`stages.run`)."""
  from jaxrepr.methods.distill import stages  # stages imports the trainer, which imports methods
  return stages.run(config, workdir)
