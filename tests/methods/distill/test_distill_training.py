"""Distillation training: the KD loss against numpy, frozen teachers, pruning masks, and tiny
multi-stage and recursive runs through `stages.run` (complete, preempt + resume, rerun = no-op).

The recursive runs test jaxrepr's formalisation of the KL contraction named in the abstract of
Flouro & Chadwick, "Recursive Meta-Distillation: An Axiomatic Framework for Iterative Knowledge
Refinement" (arXiv 2601.13100): KL(p* || q_k) <= (1 - alpha)^k KL(p* || q_0) for a realisable
student (`jaxrepr.methods.distill.meta_axioms`)."""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import train
from jaxrepr.data import images
from jaxrepr.methods import distill
from jaxrepr.methods.distill import stages, student as student_lib
from tests.core.helpers import load_config


def tiny_config(*variants, **stage_fields):
  config = load_config("distill", ",".join(("tiny",) + variants))
  config.stages.update(stage_fields)
  config.train.checkpoint_every = 0  # final saves only (preemption saves anyway): faster tests
  return config


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """A tiny trained teacher (MLP 64-32-10), shared by every test of the module."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = stages.teacher_config(tiny_config())
  config.num_devices = 1
  train.train_and_evaluate(config, workdir)
  return workdir


def _batch(n=16):
  arrays = images.load(tiny_config().data, "test")
  return {"image": jnp.asarray(arrays["image"][:n]), "label": jnp.asarray(arrays["label"][:n])}


def _mlp_numpy(params, image_BxHxWxC):
  h = np.asarray(image_BxHxWxC, np.float64).reshape(image_BxHxWxC.shape[0], -1)
  h = np.maximum(h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"], 0.0)
  return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature,t2", [(1.0, True), (3.0, True), (3.0, False)])
def test_kd_loss_equals_a_numpy_reference(teacher_dir, temperature, t2):
  config = tiny_config()
  config.model.update(
    dict(teacher_workdir=teacher_dir, temperature=temperature, t2_scaling=t2, ce_weight=0.3)
  )
  method = distill.build(config)
  batch = _batch()
  params = method.init(jax.random.key(0), batch)
  loss, metrics = jax.jit(method.loss)(params, batch, jax.random.key(1))

  teacher = student_lib.load_frozen(teacher_dir).params
  log_p = _log_softmax(_mlp_numpy(teacher, batch["image"]) / temperature)
  z_s = _mlp_numpy(jax.tree.map(np.asarray, params), batch["image"])
  log_q = _log_softmax(z_s / temperature)
  kl = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1))
  ce = -np.mean(_log_softmax(z_s)[np.arange(16), np.asarray(batch["label"])])
  expected = (temperature**2 if t2 else 1.0) * kl + 0.3 * ce
  np.testing.assert_allclose(float(metrics["kl"]), kl, rtol=1e-4)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def _check_meta_target(teacher_dir, prev_dir):
  """The 'meta' source trains against t = alpha p_base + (1 - alpha) q_prev (the canonical
  anchored meta-teacher)."""
  alpha = 0.3
  config = tiny_config()
  config.model.update(
    dict(
      source="meta",
      teacher_workdir=teacher_dir,
      previous_workdir=prev_dir,
      alpha=alpha,
      soften_student=False,
      temperature=1.0,
    )
  )
  method = distill.build(config)
  batch = _batch()
  params = method.init(jax.random.key(0), batch)
  _, metrics = jax.jit(method.loss)(params, batch, jax.random.key(1))
  p = np.exp(_log_softmax(_mlp_numpy(student_lib.load_frozen(teacher_dir).params, batch["image"])))
  q_prev = np.exp(
    _log_softmax(_mlp_numpy(student_lib.load_frozen(prev_dir).params, batch["image"]))
  )
  t = alpha * p + (1 - alpha) * q_prev
  log_q = _log_softmax(_mlp_numpy(jax.tree.map(np.asarray, params), batch["image"]))
  assert np.abs(t - p).sum(-1).mean() > 0.1  # the two teachers really differ
  np.testing.assert_allclose(
    float(metrics["kl"]), np.mean(np.sum(t * (np.log(t) - log_q), -1)), rtol=1e-4
  )


def test_teacher_params_receive_no_gradient(teacher_dir):
  config = tiny_config()
  config.model.teacher_workdir = teacher_dir
  method = distill.build(config)
  batch = _batch()
  params = method.init(jax.random.key(0), batch)
  grads = jax.jit(jax.grad(lambda p: method.loss(p, batch, jax.random.key(1))[0]))(params)
  # The gradient pytree is the student's alone; the teacher is a closed-over constant.
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))

  # The KD target itself carries no gradient to the teacher's logits (stop_gradient in the loss).
  def loss_of_teacher_logits(z_t):
    target = jax.lax.stop_gradient(jax.nn.softmax(z_t))
    return student_lib.kd_loss(
      target,
      jnp.zeros_like(z_t),
      batch["label"][:4],
      temperature=1.0,
      soften_student=True,
      t2_scaling=True,
      kd_weight=1.0,
      ce_weight=0.0,
    )[0]

  z_t = jnp.asarray(np.random.default_rng(0).normal(size=(4, 10)), jnp.float32)
  np.testing.assert_array_equal(jax.grad(loss_of_teacher_logits)(z_t), 0.0)


class LossTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_and_predict_are_finite_with_the_right_shapes(self):
    teacher = self._teacher
    config = tiny_config()
    config.model.update(dict(teacher_workdir=teacher, top_k=3, family="hybrid", temperature=2.0))
    method = distill.build(config)
    batch = _batch(8)
    params = method.init(jax.random.key(0), batch)
    loss, metrics = self.variant(method.loss)(params, batch, jax.random.key(1))
    logits = self.variant(method.predict)(params, batch, jax.random.key(1))
    chex.assert_shape(loss, ())
    chex.assert_shape(logits, (8, 10))
    chex.assert_tree_all_finite((loss, metrics, logits))

  @pytest.fixture(autouse=True)
  def _inject(self, teacher_dir):
    self._teacher = teacher_dir


def test_bad_model_config_is_refused_naming_the_field(teacher_dir):
  config = tiny_config()
  config.model.update(dict(source="meta", teacher_workdir=teacher_dir))
  with pytest.raises(ValueError, match=r"config.model.previous_workdir"):
    distill.build(config)
  config = tiny_config()
  config.model.update(dict(teacher_workdir=teacher_dir, sparsity=0.5))
  with pytest.raises(ValueError, match=r"config.model.sparsity=0.5: .*init_workdir"):
    distill.build(config)
  config = tiny_config()
  config.model.update(dict(teacher_workdir=teacher_dir, init_workdir=teacher_dir))
  config.model.student.hidden = (8,)
  with pytest.raises(ValueError, match=r"init_workdir=.* holds a"):
    distill.build(config)
  config = tiny_config()
  config.model.teacher_workdir = "/nonexistent/run"
  with pytest.raises(FileNotFoundError, match=r"/nonexistent/run/config.json"):
    distill.build(config)


def test_magnitude_masks_prune_exactly_the_smallest_and_nest():
  rng = np.random.default_rng(0)
  params = {"Dense_0": {"kernel": rng.normal(size=(20, 10)), "bias": rng.normal(size=(10,))}}
  m50 = student_lib.prune_masks(params, 0.5)
  m80 = student_lib.prune_masks(student_lib.apply_masks(params, m50), 0.8)
  kernel = np.abs(params["Dense_0"]["kernel"])
  assert m50["Dense_0"]["kernel"].sum() == 100 and m80["Dense_0"]["kernel"].sum() == 40
  assert kernel[m50["Dense_0"]["kernel"] == 0].max() < kernel[m50["Dense_0"]["kernel"] == 1].min()
  assert np.all(m80["Dense_0"]["kernel"] <= m50["Dense_0"]["kernel"])  # nested along the path
  np.testing.assert_array_equal(m80["Dense_0"]["bias"], 1.0)


def _stage_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read()


def _kls(report):
  return [r["eval"]["kl_reference"] for r in report["rows"] if r["name"] != "teacher"]


def test_multistage_run_completes_resumes_and_reports_per_stage_kl(teacher_dir, tmp_path):
  teacher_params = student_lib.load_frozen(teacher_dir).params
  config = tiny_config(teacher_workdir=teacher_dir, final_sparsity=0.8)
  workdir = str(tmp_path)
  report = stages.run(config, workdir, train.train_and_evaluate)
  assert report["complete"] and [r["name"] for r in report["rows"]] == [
    "teacher",
    "stage_1",
    "stage_2",
  ]
  for row, sparsity in zip(report["rows"][1:], (0.4, 0.8)):
    # Pruned entries stay exactly zero through training: the checkpoint is its own mask.
    assert abs(row["kernel_sparsity"] - sparsity) < 0.01, row
    assert np.isfinite(row["eval"]["kl_reference"]) and row["eval"]["kl_reference"] >= 0
  assert os.path.exists(os.path.join(workdir, "report.png"))
  assert json.load(open(os.path.join(workdir, "report.json")))["rows"][2]["sparsity"] == 0.8
  # The frozen teacher is untouched by the stages that distilled from it.
  jax.tree.map(
    np.testing.assert_array_equal, student_lib.load_frozen(teacher_dir).params, teacher_params
  )
  before = _stage_lines(os.path.join(workdir, "stage_2"))
  again = stages.run(
    config, workdir, train.train_and_evaluate
  )  # a rerun reads the finished stages, trains nothing
  assert _stage_lines(os.path.join(workdir, "stage_2")) == before
  assert _kls(again) == _kls(report)


def _preempt_at(monkeypatch, stage_suffix, at_step):
  """Makes the trainer stop as after SIGTERM at `at_step` of the stage whose workdir ends so."""
  original = train.train_and_evaluate

  def patched(config, workdir):
    if workdir.endswith(stage_suffix):
      monkeypatch.setattr(train, "_preempted", lambda guard, step, every: step == at_step)
    try:
      return original(config, workdir)
    finally:
      monkeypatch.setattr(train, "_preempted", _real_preempted)

  _real_preempted = train._preempted
  monkeypatch.setattr(train, "train_and_evaluate", patched)


def test_recursive_run_contracts_for_alpha_positive_and_not_for_alpha_zero(
  teacher_dir, tmp_path, monkeypatch, capsys
):
  anchored, free = str(tmp_path / "alpha_0.5"), str(tmp_path / "alpha_0")
  config = tiny_config("recursive", teacher_workdir=teacher_dir, alpha=0.5)
  config.num_devices = 1
  # Preempt generation 1 in the middle, then rerun: it resumes from its checkpoint.
  _preempt_at(monkeypatch, "stage_1", at_step=30)
  partial = stages.run(config, anchored, train.train_and_evaluate)
  assert not partial["complete"]
  monkeypatch.undo()
  capsys.readouterr()
  report = stages.run(config, anchored, train.train_and_evaluate)
  assert "resuming from step 30" in capsys.readouterr().out
  kl = _kls(report)

  shutil.copytree(os.path.join(anchored, "stage_0"), os.path.join(free, "stage_0"))  # same q_0
  config_free = tiny_config("recursive", teacher_workdir=teacher_dir, alpha=0.0)
  config_free.num_devices = 1
  kl_free = _kls(stages.run(config_free, free, train.train_and_evaluate))
  assert kl_free[0] == kl[0] > 0.1  # q_0 is far from p* (fitted to the T = 4 teacher)

  # Tolerance: the contraction theorem bounds the ratio by 1 - alpha only for a realisable
  # student; a 60-step generation adds a fitting error eps (with a floor of eps / alpha). The
  # measured ratios of this tiny setting are 0.25-0.35 (seeds 0-2), so allowing 1.5 x (1 - alpha)
  # per step keeps a clear contraction requirement while absorbing eps; with alpha = 0 the student
  # refits q_{k-1} and the KL stays within 20% of its previous value.
  for k in (1, 2):
    assert kl[k] <= 1.5 * 0.5 * kl[k - 1], kl
    assert kl_free[k] >= 0.8 * kl_free[k - 1], kl_free
  assert kl[2] < 0.5 * kl[0] and kl_free[2] > 0.8 * kl_free[0]
  _check_meta_target(teacher_dir, os.path.join(anchored, "stage_0"))
  rows = report["rows"]
  assert rows[2]["rate"] == 0.5 and rows[3]["bound"] == pytest.approx(0.25 * kl[0])
