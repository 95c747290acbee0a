"""LPN test-time search on the tiny model of lpn_testlib: distinct attempts, the no-encoder
('prior') start through solve_task, batched decoder scoring, the default prediction, the new
eval_latent fields as search overrides and their config errors, and the embedding initialisation
flag. One task with 3 valid spec pairs and a padded fourth; the ones that compile solve_task are
-m heavy.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.errors import ConfigError
from jaxrepr.evaluators.lpn_loo import with_eval_latent
from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import decode, search
from jaxrepr.methods.lpn import model as model_lib
from tests.methods.lpn.lpn_testlib import random_batch, tiny_config, tiny_params

Z = 4  # tiny_config's latent_dim
MASK = np.array([True, True, True, False])


@functools.cache
def _task():
  cfg = tiny_config(3)
  enc, dec = model_lib.modules_from_config(cfg.model)
  batch = random_batch(1, 4, 3, seed=0)
  params = tiny_params(3)
  g, s = jnp.asarray(batch["grids"][0]), jnp.asarray(batch["shapes"][0])
  mask = jnp.asarray(MASK)
  mu, logvar = jax.jit(lambda p: search.encode_spec(enc, p, g, s))(params["encoder"])
  score = search.spec_score_fn(dec, params["decoder"], g, s, mask)
  return cfg, enc, dec, params, g, s, mask, mu, logvar, score


def _eval_cfg(**overrides):
  c = tiny_config(3).model.eval_latent
  c.update(overrides)
  return c


def _solver(eval_cfg, key=2):
  """params -> solve_task on the task's 4 pairs as test inputs (the spec: the first 3), jitted."""
  _, enc, dec, _, g, s, mask, *_ = _task()
  rng = jax.random.key(key)
  return jax.jit(
    lambda p: lpn.solve_task(enc, dec, p, g, s, mask, g[..., 0], s[:, :, 0], rng, eval_cfg)
  )


def _solve(eval_cfg):
  return _solver(eval_cfg)(tiny_params(3))


@pytest.mark.heavy
def test_prior_start_predictions_do_not_depend_on_the_encoder():
  """solve_task with the 'prior' start: moving every encoder parameter changes nothing (it
  changes the 'encoder' start's predictions)."""
  params = tiny_params(3)
  moved = {**params, "encoder": jax.tree.map(lambda p: p + 0.5, params["encoder"])}
  for start, independent in (("prior", True), ("encoder", False)):
    solve = _solver(_eval_cfg(mode="gradient_ascent", steps=2, start=start))
    a, b = solve(params), solve(moved)
    same = np.array_equal(a["score"], b["score"]) and np.array_equal(a["grids"], b["grids"])
    assert same == independent, start


@pytest.mark.heavy
def test_batched_decoder_scores_equal_one_by_one():
  """The tiny decoder's spec scores of 7 latents, 3 per call, against one per call as before."""
  *_, score = _task()
  cand = jax.random.normal(jax.random.key(1), (7, Z))
  by_one = jax.jit(lambda c: jax.lax.map(lambda z: score(z[None])[0], c))(cand)
  batched = jax.jit(lambda c: search.score_in_batches(score, c, 3))(cand)
  np.testing.assert_allclose(batched, by_one, rtol=1e-5, atol=1e-5)


# -- distinct attempts ------------------------------------------------------------------------


def test_distinct_second_picks_the_best_differing_grid():
  g = np.zeros((4, 4, 2, 2), np.int32)
  g[0, 2, 0, 0] = g[0, 3, 1, 1] = 5  # test input 0: candidates 2 and 3 differ
  shapes = np.ones((4, 4, 2), np.int32) * 2
  shapes[1, 3] = [1, 2]  # test input 1: only candidate 3 differs (by its shape) ...
  scores = np.zeros((4, 4), np.float32)
  scores[1, 3] = -np.inf  # ... but it was never scored: no candidate
  shapes[2, 2] = [2, 1]  # test input 2: candidate 2 differs by its shape only (all-zero grids)
  j = decode.distinct_second(jnp.asarray(g), jnp.asarray(shapes), jnp.asarray(scores))
  np.testing.assert_array_equal(j, [2, 1, 2, 1])  # test input 3: none differs, the second best


@pytest.mark.heavy
def test_distinct_attempts_decode_to_different_grids():
  """Gradient ascent at lr 1: for two of four test inputs the best and second-best latents decode
  to the same grid. With distinct_attempts, attempt 1 is unchanged and attempt 2 is, among the
  8 best latents, the best whose grid differs; it exists here for every input."""
  c = dict(mode="gradient_ascent", steps=6, lr=1.0)
  plain = _solve(_eval_cfg(**c))
  distinct = _solve(_eval_cfg(distinct_attempts=True, **c))
  differs = lambda o: [  # noqa: E731
    not (
      np.array_equal(o["grids"][i], o["grids_2"][i])
      and np.array_equal(o["shapes"][i], o["shapes_2"][i])
    )
    for i in range(4)
  ]
  assert not all(differs(plain))  # the flag has something to do
  assert all(differs(distinct))
  for k in ("grids", "shapes", "score"):
    np.testing.assert_array_equal(distinct[k], plain[k])
  assert np.all(np.asarray(distinct["score_2"]) <= np.asarray(plain["score_2"]))
  for i, d in enumerate(differs(plain)):  # where the second best already differs, it is kept
    if d:
      np.testing.assert_array_equal(distinct["grids_2"][i], plain["grids_2"][i])
      np.testing.assert_array_equal(distinct["score_2"][i], plain["score_2"][i])
  np.testing.assert_array_equal(distinct["latent_evals"], plain["latent_evals"])


# -- defaults, config --------------------------------------------------------------------------


@pytest.mark.heavy
def test_default_prediction_decodes_the_mean_start():
  """solve_task with the default eval_latent decodes, as attempts 1 and 2, the mean over the spec
  of one posterior sample per pair (drawn with the first half of the per-test-input key)."""
  _, _, dec, params, g, s, mask, mu, logvar, _ = _task()
  out = _solve(_eval_cfg())
  keys = jax.random.split(jax.random.key(2), 4)
  z0 = jnp.concatenate(
    [search.sample_mean_latent(mu, logvar, mask, jax.random.split(k)[0]) for k in keys]
  )
  ref = jax.jit(lambda z: decode.greedy_decode(dec, params["decoder"], g[..., 0], s[:, :, 0], z))(
    z0
  )
  np.testing.assert_array_equal(out["grids"], ref["grid"])
  np.testing.assert_array_equal(out["grids_2"], ref["grid"])
  np.testing.assert_array_equal(out["latent_evals"], 1)


@pytest.mark.heavy
def test_new_fields_are_search_overrides():
  """A search dict of an evaluator config (lpn_loo/lpn_arc: overrides of eval_latent) may set the
  new fields, and predict runs with them."""
  search_dict = {"mode": "gradient_ascent", "steps": 1, "start": "pairs", "lr_schedule": "cosine"}
  cfg = with_eval_latent(tiny_config(3), search_dict)
  assert {k: cfg.model.eval_latent[k] for k in search_dict} == search_dict
  out = jax.jit(lambda b: lpn.build(cfg).predict(tiny_params(3), b, jax.random.key(0)))(
    random_batch(1, 3, 3, seed=4)
  )
  chex.assert_shape(out["grids_2"], (1, 3, 3, 3))


def test_bad_search_fields_are_config_errors():
  """A bad value is a one-line ConfigError naming the field, at build time (and in solve_task,
  which the ARC evaluator calls without build); so is a budget below the starts' cost."""
  bad = [
    ({"start": "best"}, "config.model.eval_latent.start"),
    ({"lr_schedule": "linear"}, "config.model.eval_latent.lr_schedule"),
    ({"mode": "encoder_sampling", "start": "pairs"}, "config.model.eval_latent.start"),
    ({"score_batch": 0}, "config.model.eval_latent.score_batch"),
    ({"distinct_candidates": 1}, "config.model.eval_latent.distinct_candidates"),
  ]
  for overrides, field in bad:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
      lpn.build(with_eval_latent(tiny_config(3), overrides))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
      _solve_unchecked(_eval_cfg(**overrides))
  with pytest.raises(ConfigError, match=r"eval_latent\.budget=3 .* 4 latent evaluations"):
    _solve_unchecked(_eval_cfg(mode="gradient_ascent", start="pairs", budget=3))


def _solve_unchecked(eval_cfg):
  """solve_task called eagerly on placeholder arrays: it must refuse `eval_cfg` first."""
  enc, dec = model_lib.modules_from_config(tiny_config(3).model)
  g, s = jnp.zeros((4, 3, 3, 2), jnp.int32), jnp.ones((4, 2, 2), jnp.int32)
  lpn.solve_task(enc, dec, {}, g, s, jnp.asarray(MASK), g[..., 0], s[:, :, 0], None, eval_cfg)


# -- embedding initialisation ---------------------------------------------------------------


def _embedding_tables(params) -> list[np.ndarray]:
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  tables = [np.asarray(v) for p, v in paths if "embedding" in str(p) or "'cls'" in str(p)]
  assert len(tables) == 13  # encoder: 6 tables and CLS; decoder: 6 tables
  return tables


def test_embedding_init_flag():
  """Default N(0, 0.02^2) embedding tables and CLS (tiny_params, E = 16); 'flax_default' gives the
  reference code's N(0, 1/E) in tables of the same shapes (no transformer layers: only the
  embeddings are looked at); a bad value names the field."""
  default = _embedding_tables(tiny_params(3))
  np.testing.assert_allclose(np.std(np.concatenate([t.ravel() for t in default])), 0.02, rtol=0.1)
  cfg = tiny_config(3)
  cfg.model.embedding_init = "flax_default"
  for sub in (cfg.model.encoder, cfg.model.decoder):
    sub.num_layers = 0
  flax_init = _embedding_tables(
    jax.jit(lpn.build(cfg).init)(jax.random.key(0), random_batch(1, 2, 3))
  )
  std = np.std(np.concatenate([t.ravel() for t in flax_init]))
  np.testing.assert_allclose(std, 1 / np.sqrt(16), rtol=0.1)
  assert [t.shape for t in flax_init] == [t.shape for t in default]
  cfg.model.embedding_init = "zeros"
  with pytest.raises(ConfigError, match=r"config\.model\.embedding_init"):
    lpn.build(cfg)
