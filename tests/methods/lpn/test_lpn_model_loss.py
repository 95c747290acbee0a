"""LPN model and leave-one-out loss (Macfarlane & Bonnet, "Searching Latent Program Spaces"):
parameter count, the LOO property, shapes, finite gradients."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxrepr import config as config_lib
from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import latent_ascent
from jaxrepr.methods.lpn import loss as loss_lib
from jaxrepr.methods.lpn import model as model_lib
from tests.methods.lpn.lpn_testlib import random_batch, tiny_config, tiny_params


def test_pattern_architecture_param_count():
  cfg = config_lib.base_config()
  cfg.model = lpn.default_model_config()  # Table 13: enc/dec 2 x (6 x 16), mlp 1, d_z 32, 10x10
  batch = random_batch(1, 2, 10)
  method = lpn.build(cfg)
  shapes = jax.eval_shape(method.init, jax.random.key(0), batch)
  # Table 13 lists 973k = 4 x 243,360: the reference trainer counted a 4-device replicated state
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 243_360
  assert "243,360" in method.param_count_note and "973k" in method.param_count_note


# Learned positions: every training mode in test_leave_one_out.py; here RoPE, and the encoder-only
# change below.
@pytest.mark.parametrize("positions", ["rope"])
def test_pair_never_influences_its_own_context(positions):
  cfg = tiny_config(3, positions)
  enc, dec = model_lib.modules_from_config(cfg.model)
  batch = random_batch(2, 4, 3, seed=1)
  params = tiny_params(3, positions)
  terms = jax.jit(
    lambda g, s, eg=None, es=None: loss_lib.loo_terms(
      enc, dec, params, g, s, jax.random.key(5), cfg.model, eg, es
    )
  )
  base = terms(batch["grids"], batch["shapes"])
  i = 2
  g2, s2 = batch["grids"].copy(), batch["shapes"].copy()
  g2[:, i] = (g2[:, i] + 3) % 10
  s2[:, i] = np.array([[3, 2], [1, 3]])
  changed = terms(g2, s2)
  np.testing.assert_allclose(changed["context"][:, i], base["context"][:, i], rtol=0, atol=1e-6)
  others = [j for j in range(4) if j != i]
  assert np.all(np.abs(changed["context"][:, others] - base["context"][:, others]).max(-1) > 1e-4)
  # Only pair i's encoder input changes: its own loss term is unchanged, the others' are not.
  enc_only = terms(batch["grids"], batch["shapes"], g2, s2)
  np.testing.assert_allclose(enc_only["nll"][:, i], base["nll"][:, i], rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(enc_only["nll"][:, others] - base["nll"][:, others]) > 1e-7)


def _check_loss_and_predict_shapes(wrap):
  cfg = tiny_config(3)
  cfg.model.eval_latent.mode = "random_search"  # gradient ascent: test_lpn_decode_search.py
  cfg.model.eval_latent.num_samples = 2
  method = lpn.build(cfg)
  batch = random_batch(2, 3, 3, seed=2)
  params = tiny_params(3)
  loss, metrics = wrap(method.loss)(params, batch, jax.random.key(1))
  chex.assert_shape(loss, ())
  chex.assert_tree_all_finite((loss, metrics))
  assert set(metrics) == {"loss", "nll", "kl", "cell_accuracy", "exact_match"}
  assert 0.0 <= float(metrics["cell_accuracy"]) <= 1.0
  out = wrap(method.predict)(params, batch, jax.random.key(2))
  chex.assert_shape([out["grids"], out["grids_2"]], (2, 3, 3, 3))
  chex.assert_shape([out["shapes"], out["shapes_2"]], (2, 3, 2))
  assert out["shapes"].min() >= 1 and out["shapes"].max() <= 3


def test_loss_and_predict_shapes_finite():
  _check_loss_and_predict_shapes(jax.jit)


@pytest.mark.heavy  # about a minute of eager execution
def test_loss_and_predict_shapes_finite_without_jit():
  with jax.disable_jit():
    _check_loss_and_predict_shapes(lambda f: f)


@pytest.mark.parametrize(
  "mode,stop_gradient,positions",
  [
    ("mean", True, "rope"),
    ("gradient_ascent", True, "learned"),
    ("gradient_ascent", False, "learned"),
    ("random_search", True, "learned"),
  ],
)
def test_gradient_finite_for_each_training_mode(mode, stop_gradient, positions):
  cfg = tiny_config(3, positions)
  cfg.model.train_latent.mode = mode
  cfg.model.train_latent.stop_gradient = stop_gradient
  cfg.model.train_latent.num_samples = 3
  method = lpn.build(cfg)
  batch = random_batch(2, 3, 3, seed=3)
  params = tiny_params(3, positions)
  grads = jax.jit(jax.grad(lambda p: method.loss(p, batch, jax.random.key(1))[0]))(params)
  chex.assert_tree_all_finite(grads)
  enc_norm = sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads["encoder"]))
  assert enc_norm > 0.0  # the encoder learns through the reparameterised latents


def test_second_order_mode_gradient_matches_finite_differences():
  """Grad k ** (stop_gradient=False): the gradient of the training loss carries the derivative of
  the latent update. The loss value does not depend on stop_gradient, so a central finite difference
  of it is the true derivative: Grad k **'s gradient must match it, the stop-gradient gradient must
  miss it by far more than the tolerance. Along a random direction in the encoder's parameters and
  one in the decoder's: the second-order terms reach both (the paper's Grad k **).

  Two Adam steps at lr 1, last iterate: the second step depends on the ratio of the two gradients,
  so its derivative is large and smooth. (The first step of a fresh Adam is about lr * sign(g),
  whose derivative is about 0: at one step the two modes' gradients differ only by rounding.)"""
  batch = random_batch(2, 3, 3, seed=4)
  params = tiny_params(3)
  losses = {}
  for sg in (True, False):
    cfg = tiny_config(3)
    cfg.model.train_latent.update(
      dict(mode="gradient_ascent", steps=2, lr=1.0, select="last", stop_gradient=sg)
    )
    losses[sg] = lpn.build(cfg).loss
  theta, unravel = ravel_pytree(params)
  dirs = []
  for k, part in enumerate(("encoder", "decoder")):
    in_part = ravel_pytree(
      {
        key: jax.tree.map(lambda a, on=key == part: jnp.full_like(a, on), v)
        for key, v in params.items()
      }
    )[0]
    d = in_part * jax.random.normal(jax.random.key(7 + k), theta.shape)
    dirs.append(d / jnp.linalg.norm(d))
  h = 3e-3
  offsets = jnp.array([-2.0, -1.0, 1.0, 2.0]) * h

  @jax.jit
  def run(p):
    rng = jax.random.key(1)
    grads = {
      sg: ravel_pytree(jax.grad(lambda q, f=f: f(q, batch, rng)[0])(p))[0]
      for sg, f in losses.items()
    }
    points = jnp.stack([ravel_pytree(p)[0] + o * d for d in dirs for o in offsets])
    values = jax.lax.map(lambda t: losses[False](unravel(t), batch, rng)[0], points)
    return grads, values.reshape(len(dirs), len(offsets))

  grads, values = run(params)
  # Fourth-order central difference: its truncation error is negligible at this h; float32
  # rounding of the loss leaves an error under 1e-4. Measured: the stop-gradient gradient misses
  # the derivative by 0.08 (encoder) and 0.2 (decoder).
  fd = (8.0 * (values[:, 2] - values[:, 1]) - (values[:, 3] - values[:, 0])) / (12.0 * h)
  tol = 1e-3
  for j, part in enumerate(("encoder", "decoder")):
    second_order, first_order = float(grads[False] @ dirs[j]), float(grads[True] @ dirs[j])
    assert abs(second_order - float(fd[j])) < tol, (part, second_order, float(fd[j]))
    assert abs(first_order - float(fd[j])) > 20 * tol, (part, first_order, float(fd[j]))


def test_bad_batches_are_named():
  method = lpn.build(tiny_config(3))
  batch = random_batch(1, 3, 3)
  params = tiny_params(3)
  with pytest.raises(ValueError, match="grids"):
    method.loss(
      params, {"grids": batch["grids"][..., 0], "shapes": batch["shapes"]}, jax.random.key(0)
    )
  with pytest.raises(ValueError, match="N >= 2"):
    method.loss(
      params, {"grids": batch["grids"][:, :1], "shapes": batch["shapes"][:, :1]}, jax.random.key(0)
    )
  cfg = tiny_config(3)
  cfg.model.positions = "sinusoidal"
  with pytest.raises(ValueError, match="positions"):
    lpn.build(cfg)


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("attention", ["blocked", "xla"])
def test_latent_only_gradient_path_gives_the_same_scores_and_latent_gradients(positions, attention):
  """The decoder's latent-only path (first-layer attention backward reduced to the ctx token) gives
  the plain path's scores and gradients w.r.t. z, and no gradient to the parameters."""
  dec = model_lib.Decoder(
    max_rows=4,
    max_cols=3,
    num_layers=2,
    num_heads=2,
    head_dim=8,
    mlp_factor=1,
    positions=positions,
    attention=attention,
  )
  ks = jax.random.split(jax.random.key(1), 5)
  b = 6
  grids = jax.random.randint(ks[0], (b, 4, 3, 2), 0, 10)
  shapes = jnp.stack(
    [jax.random.randint(ks[1], (b, 2), 1, 5), jax.random.randint(ks[2], (b, 2), 1, 4)], axis=1
  )  # (B, 2 [rows, cols], 2)
  z = jax.random.normal(ks[3], (b, 5))
  params = dec.init(ks[4], grids[..., 0], shapes[:, :, 0], z, grids[..., 1], shapes[:, :, 1])

  def total(p, zz, only):
    return jnp.sum(latent_ascent.pair_scores(dec, p, grids, shapes, zz, only)[0])

  value_and_grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)), static_argnums=2)
  plain, fast = value_and_grads(params, z, False), value_and_grads(params, z, True)
  np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
  np.testing.assert_allclose(fast[1][1], plain[1][1], rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(plain[1][1]).max()) > 1e-3
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(fast[1][0]))


def test_gradient_search_one_position_at_a_time_equals_all_at_once():
  """Grad k in training: the ascent run per LOO position (each position's whole ascent in one
  step of a loop over positions) gives the contexts of all positions at once."""
  cfg = tiny_config(3)
  enc, dec = model_lib.modules_from_config(cfg.model)
  batch = random_batch(2, 4, 3, seed=2)
  params = tiny_params(3)
  z0 = jax.random.normal(jax.random.key(3), (2, 4, cfg.model.latent_dim))
  contexts = {}
  for per_position in (True, False):
    lat = ml_collections.ConfigDict(
      dict(
        mode="gradient_ascent",
        steps=2,
        lr=0.1,
        stop_gradient=True,
        select="best",
        per_position=per_position,
      )
    )
    contexts[per_position] = jax.jit(
      lambda p, z, lat=lat: loss_lib.loo_contexts(
        dec, p, batch["grids"], batch["shapes"], z, jax.random.key(4), lat
      )
    )(params["decoder"], z0)
  assert float(jnp.max(jnp.abs(contexts[True] - z0))) > 1e-3  # the search moved
  np.testing.assert_allclose(contexts[True], contexts[False], rtol=1e-4, atol=1e-5)
