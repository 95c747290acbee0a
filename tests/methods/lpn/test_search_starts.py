"""LPN test-time search ablations on a quadratic score (Macfarlane & Bonnet, "Searching Latent
Program Spaces", §5.4 and Fig. 2, Appendix B.11 and Table 11): where a search starts (encoder,
prior, each pair, perturbed), what each start costs, the cosine latent learning rate, evolution
spending its whole budget, batched candidate scoring, and that the defaults stay today's search.

The search logic is the same as with the decoder's score (test_search_attempts.py runs that one);
a spec of 3 valid pairs and a padded fourth.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods.lpn import latent_ascent, search
from tests.methods.lpn.lpn_testlib import tiny_config

Z = 4  # tiny_config's latent_dim
MASK = np.array([True, True, True, False])


# A score with a known optimum, 0 at z = 0 (latents (..., Z) -> (...)): the search logic (starts,
# costs, budgets, chunks) is the same as with the decoder's score, whose compilation would cost
# seconds per case. A padded pair's start is z = 0: were it a candidate, it would win.
MU = jnp.asarray(np.random.default_rng(0).normal(size=(4, Z)), jnp.float32)
LOGVAR = jnp.full((4, Z), -1.0)


def quadratic(z):
  return -jnp.sum(jnp.square(z), axis=-1)


def _search(method, key=11, mask=MASK, score=quadratic, **kw):
  mask = jnp.asarray(mask)
  mu, logvar = MU[: mask.shape[0]], LOGVAR[: mask.shape[0]]
  return jax.jit(lambda r: search.search(method, score, mu, logvar, mask, r, **kw))(
    jax.random.key(key)
  )


# -- starts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "start, s_all, n_valid",
  [
    pytest.param("encoder", 1, 1, marks=pytest.mark.heavy),  # one start: the CI covers it below
    pytest.param("prior", 1, 1, marks=pytest.mark.heavy),
    ("pairs", 4, 3),
    ("perturbed", 3, 3),
  ],
)
def test_start_latents_shapes_and_costs(start, s_all, n_valid):
  """S start latents, the n valid ones counted: 'mean' scores n latents, gradient ascent k steps
  from each costs n (3k + 1), every method keeps the best two of all its starts' latents, and a
  budget split over the S starts is never exceeded."""
  mask = jnp.asarray(MASK)
  assert search.num_starts(start, 4, 2) == s_all
  kw = dict(start=start, start_perturbations=2)
  runs = {"mean": dict(keep=s_all + 1), "ga": dict(steps=2)}
  for method in ("gradient_ascent", "random_search", "evolution"):
    runs[method + "_budget"] = {
      "population": 4,
      **search.counts_for_budget(method, 40, 4, s_all, start),
    }
  rng_start = jax.random.split(jax.random.key(11))[0]
  post = (MU, LOGVAR) if start != "prior" else (0 * MU, 0 * LOGVAR)

  @jax.jit
  def run(r):
    out = {
      name: search.search(
        name.replace("_budget", "").replace("ga", "gradient_ascent"),
        quadratic,
        MU,
        LOGVAR,
        mask,
        r,
        **kw,
        **run_kw,
      )
      for name, run_kw in runs.items()
    }
    z_s, valid_s = search.start_latents(start, *post, mask, rng_start, 2, 0.5)
    return out, z_s, valid_s, latent_ascent.gradient_ascent(quadratic, z_s, 2, 0.1)[1]

  res, z, valid, sc = run(jax.random.key(11))
  chex.assert_shape(z, (s_all, Z))
  chex.assert_shape(valid, (s_all,))
  assert int(np.sum(valid)) == n_valid
  assert int(res["mean"]["latent_evals"]) == n_valid
  ga = res["ga"]
  assert int(ga["latent_evals"]) == n_valid * 7 and int(ga["decoder_calls"]) == n_valid * 7 * 3
  chex.assert_shape(ga["best"], (Z,))
  # the best of all starts' ascents, the padded pair's start (the optimum) excluded
  best = np.max(np.where(np.asarray(valid)[None], np.asarray(sc), -np.inf))
  np.testing.assert_allclose(ga["best_score"], best, rtol=1e-6)
  for name in runs:
    if name.endswith("_budget"):
      r = res[name]
      assert int(r["latent_evals"]) <= 40, name
      assert float(r["best_score"]) >= float(r["second_score"])
      assert float(r["best_score"]) >= float(res["mean"]["best_score"])  # starts are candidates
      assert float(r["best_score"]) < -1e-6  # never the padded pair's start, the optimum


def test_pairs_start_with_one_pair_is_the_encoder_start():
  """One spec pair: the pair's own latent is the mean latent, from the same random numbers, so
  'pairs' and 'encoder' run the very same gradient ascent. With several pairs, the mean of the
  'pairs' starts over the valid pairs is the 'encoder' start; a padded pair is no start."""
  enc_run = _search("gradient_ascent", mask=[True], steps=3, start="encoder")
  pairs_run = _search("gradient_ascent", mask=[True], steps=3, start="pairs")
  for k in ("best", "second", "best_score", "second_score", "latent_evals"):
    np.testing.assert_array_equal(pairs_run[k], enc_run[k], err_msg=k)
  key, mask = jax.random.key(5), jnp.asarray(MASK)
  z_pairs, valid = search.start_latents("pairs", MU, LOGVAR, mask, key)
  z_enc, _ = search.start_latents("encoder", MU, LOGVAR, mask, key)
  np.testing.assert_array_equal(valid, MASK)
  np.testing.assert_allclose(np.sum(z_pairs[:3], 0) / 3, z_enc[0], rtol=1e-5, atol=1e-6)
  z_pert, _ = search.start_latents("perturbed", MU, LOGVAR, mask, key, 5, 0.5)
  z_first, _ = search.start_latents("encoder", MU, LOGVAR, mask, jax.random.split(key)[0])
  np.testing.assert_array_equal(z_pert[0], z_first[0])  # the encoder start, then 5 around it
  spread = np.std(np.asarray(z_pert[1:] - z_pert[:1]))
  assert 0.2 < spread < 1.0  # scale 0.5


def test_random_search_samples_spread_over_the_valid_starts():
  """'pairs' start, 6 samples of scale 1e-3: two around each of the 3 valid pairs' latents, none
  around the padded pair's start; the padded start itself is never a candidate."""
  res = _search("random_search", start="pairs", num_samples=6, scale=1e-3, keep=10)
  ranked, scores = np.asarray(res["ranked"]), np.asarray(res["ranked_scores"])
  assert int(res["latent_evals"]) == 3 + 6 and np.sum(np.isfinite(scores)) == 9
  rng_start = jax.random.split(jax.random.key(11))[0]
  z, _ = search.start_latents("pairs", MU, LOGVAR, jnp.asarray(MASK), rng_start)
  dist = np.linalg.norm(ranked[np.isfinite(scores)][:, None] - np.asarray(z[:3])[None], axis=-1)
  nearest = np.argmin(dist, axis=1)
  assert np.all(np.min(dist, axis=1) < 1e-2)
  np.testing.assert_array_equal(np.bincount(nearest, minlength=3), [3, 3, 3])  # start + 2


def test_prior_start_is_the_encoder_start_on_the_prior():
  """The no-encoder setting (Fig. 2's prior start): the search is that of the 'encoder' start on
  a posterior equal to the prior, N(0, I) for every pair, whatever the encoder said."""
  prior = _search("gradient_ascent", steps=2, start="prior")
  mask = jnp.asarray(MASK)
  zeros = jax.jit(
    lambda r: search.search(
      "gradient_ascent", quadratic, 0 * MU, 0 * LOGVAR, mask, r, steps=2, start="encoder"
    )
  )(jax.random.key(11))
  np.testing.assert_array_equal(prior["best"], zeros["best"])
  assert float(jnp.max(jnp.abs(prior["best"] - _search("gradient_ascent", steps=2)["best"]))) > 0


# -- cosine learning rate ---------------------------------------------------------------------


def test_cosine_schedule_first_step_is_the_constant_one_then_smaller():
  """On a linear score each Adam step moves every coordinate by lr_t (m_hat = g, v_hat = g^2):
  the cosine run's step t is the constant run's times the schedule's factor, 1 at t = 0, then
  decreasing. Through `search`: the best latent of a linear score is the last iterate."""
  steps, lr = 6, 0.3
  w = jnp.array([0.1, -0.2, 0.15, 0.05])
  linear = lambda z: jnp.sum(z * jnp.broadcast_to(w, z.shape), axis=-1)  # noqa: E731
  z0 = jnp.zeros((1, Z))
  run = lambda sched: jax.jit(  # noqa: E731
    lambda: latent_ascent.gradient_ascent(
      linear, z0, steps, latent_ascent.learning_rate(lr, sched, steps)
    )[0]
  )()
  d_const = np.abs(np.diff(np.asarray(run("constant"))[:, 0], axis=0))  # (steps, Z)
  d_cos = np.abs(np.diff(np.asarray(run("cosine"))[:, 0], axis=0))
  np.testing.assert_allclose(d_cos[0], d_const[0], rtol=1e-6)
  t = np.arange(steps)
  factor = np.sqrt(0.5 * (1 + np.cos(np.pi * t / steps)))
  np.testing.assert_allclose(d_cos / d_const, np.broadcast_to(factor[:, None], d_cos.shape), 1e-4)
  assert np.all(d_cos[1:] < d_const[1:] * 0.999) and np.all(np.diff(d_cos[:, 0]) < 0)
  assert latent_ascent.learning_rate(lr, "cosine", 0) == lr  # no steps: nothing to decay

  start = _search("mean")["best"]
  moved = {}
  for sched in ("constant", "cosine"):
    res = _search("gradient_ascent", score=linear, steps=steps, lr=lr, lr_schedule=sched)
    moved[sched] = np.abs(np.asarray(res["best"] - start))
  np.testing.assert_allclose(moved["constant"], steps * lr, rtol=1e-4)
  np.testing.assert_allclose(moved["cosine"], lr * np.sum(factor), rtol=1e-4)


# -- evolution budget, batched scoring --------------------------------------------------------


@pytest.mark.parametrize("budget", [pytest.param(1, marks=pytest.mark.heavy), 11, 17])
def test_evolution_spends_its_whole_budget(budget):
  """latent_evals == budget, and the search visits exactly `budget` distinct latents, all scored
  (a last, smaller generation spends the remainder of (budget - 1) / population)."""
  counts = search.counts_for_budget("evolution", budget, population=4)
  res = _search("evolution", scale=0.5, keep=max(budget, 3), **counts)
  assert int(res["latent_evals"]) == budget
  ranked, scores = np.asarray(res["ranked"]), np.asarray(res["ranked_scores"])
  # all visited latents are ranked (fewer than asked would be repeated)
  assert len(np.unique(ranked, axis=0)) == budget
  assert np.all(np.isfinite(scores))


@pytest.mark.parametrize("method", ["random_search", "encoder_sampling"])
def test_batched_scoring_equals_one_by_one(method):
  """Candidates scored 3 per decoder call (two full chunks and a rest) give the one-by-one
  search's scores and the same two best latents."""
  kw = dict(num_samples=7, scale=0.5, keep=8)
  one = _search(method, score_batch=1, **kw)
  batched = _search(method, score_batch=3, **kw)
  np.testing.assert_array_equal(batched["ranked"], one["ranked"])
  np.testing.assert_allclose(batched["ranked_scores"], one["ranked_scores"], rtol=1e-5)
  np.testing.assert_array_equal(batched["best"], one["best"])
  np.testing.assert_array_equal(batched["second"], one["second"])
  cand = jax.random.normal(jax.random.key(1), (8, Z))
  for b in (1, 3, 8, 20):
    np.testing.assert_array_equal(search.score_in_batches(quadratic, cand, b), quadratic(cand))


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_are_todays_search():
  """The default eval_latent is today's: the encoder start, a constant lr, plain attempts, and
  the model's N(0, 0.02^2) embeddings; default gradient ascent is the constant-lr ascent from the
  mean start."""
  default = tiny_config(3).model
  assert (default.embedding_init, default.eval_latent.start) == ("normal_0.02", "encoder")
  assert default.eval_latent.lr_schedule == "constant" and not default.eval_latent.distinct_attempts
  kw = {k: default.eval_latent[k] for k in ("start", "lr_schedule", "start_perturbations")}
  ga = _search("gradient_ascent", steps=3, lr=0.1, **kw)
  vis, sc = latent_ascent.gradient_ascent(quadratic, _search("mean", **kw)["best"][None], 3, 0.1)
  np.testing.assert_array_equal(ga["best"], vis[int(np.argmax(sc[:, 0])), 0])
  assert int(ga["latent_evals"]) == 10


def test_two_candidates_for_distinct_attempts_are_the_best_two_ranked():
  """distinct_candidates=2 (the smallest allowed) hands decode.distinct_attempts the best two."""
  out = _search("random_search", num_samples=6, keep=2)
  np.testing.assert_array_equal(out["ranked"][0], out["best"])
  np.testing.assert_array_equal(out["ranked"][1], out["second"])
  assert out["ranked_scores"].shape == (2,)
