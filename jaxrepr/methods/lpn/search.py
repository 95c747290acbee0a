"""Test-time latent program search for one task (Macfarlane & Bonnet, "Searching Latent Program
Spaces": Eq. 4, Alg. 1, Table 11).

A spec is M pairs (M, R, C, 2) with shapes (M, 2, 2) and a mask (M,) for padded pairs (ARC specs
have 2-10 pairs). score(z) = sum over valid spec pairs of log p(R) + log p(C) + mean cell log p
(teacher forced). Every method is a pure, jittable function of one task (vmap it over tasks or
restarts), starts from the encoder (the mean over spec pairs of one posterior sample each; fresh key
per call), keeps every latent it visits and returns the best and second best (attempts 1 and 2).

Methods and their cost in latent evaluations (one evaluation = one decoder pass per valid spec pair;
a gradient step is one forward and one backward pass and counts as 3 evaluations, the usual
backward ~ 2 x forward estimate):
  - 'mean'              1:              the encoder start only [Grad 0];
  - 'gradient_ascent'   3 k + 1:        k Adam steps (b1 = b2 = 0.9) on -score, per-latent gradient
                                        clipping at norm 1, best two of the k + 1 visited [Grad k]
                                        (`latent_ascent.gradient_ascent`, as in training);
  - 'random_search'     S + 1:          start and start + scale * eps_s (reference code) [Sample S];
  - 'encoder_sampling'  S:              S latents, each the mean over the spec of fresh posterior
                                        samples (paper Table 11, "Encoder sampling");
  - 'evolution'         1 + G lambda:   a (mu/mu_w, lambda)-ES of our design (the paper names
                                        evolutionary search as future work): G generations of
                                        lambda offspring m + sigma eps; m <- log-rank-weighted mean
                                        of the best mu; sigma *= 1.5 when a generation beats the
                                        best so far, else *= 0.8 (a one-fifth-success-style rule);
                                        elitist bookkeeping.
`counts_for_budget` turns a budget of latent evaluations into each method's steps/samples, so
methods are compared at equal compute; every result reports `latent_evals` and `decoder_calls`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrepr.methods.lpn.latent_ascent import gradient_ascent, pair_scores

METHODS = ("mean", "gradient_ascent", "random_search", "encoder_sampling", "evolution")


def spec_score_fn(
  decoder, dparams, spec_grids, spec_shapes, spec_mask, latent_grad_only: bool = False
):
  """z (..., Z) -> score (...) on the spec (M, R, C, 2), (M, 2, 2), mask (M,).

  `latent_grad_only` (gradient search): the same scores with a cheaper gradient w.r.t. z and none
  w.r.t. the parameters (`latent_ascent.pair_scores`)."""
  m = spec_grids.shape[0]

  def score(z):
    lead = z.shape[:-1]
    shape = lead + (m,)
    g = jnp.broadcast_to(spec_grids, shape + spec_grids.shape[1:])
    s = jnp.broadcast_to(spec_shapes, shape + (2, 2))
    zz = jnp.broadcast_to(z[..., None, :], shape + z.shape[-1:])
    lp = pair_scores(decoder, dparams, g, s, zz, latent_grad_only)[0]
    return jnp.sum(jnp.where(spec_mask, lp, 0.0), axis=-1)

  return score


def encode_spec(encoder, eparams, spec_grids, spec_shapes):
  """(mu, logvar), each (M, Z)."""
  return encoder.apply(eparams, spec_grids, spec_shapes)


def sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng, num: int = 1):
  """`num` latents (num, Z): each the mean over valid spec pairs of one posterior sample per
  pair."""
  eps = jax.random.normal(rng, (num,) + mu_MxZ.shape)
  z = mu_MxZ[None] + jnp.exp(0.5 * logvar_MxZ)[None] * eps
  w = spec_mask.astype(jnp.float32)[None, :, None]
  return jnp.sum(z * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def _top2(visited_KxZ, scores_K, latent_evals, num_pairs):
  scores_K = jnp.where(jnp.isnan(scores_K), -jnp.inf, scores_K)
  if scores_K.shape[0] == 1:
    visited_KxZ = jnp.concatenate([visited_KxZ, visited_KxZ])
    scores_K = jnp.concatenate([scores_K, scores_K])
  top, idx = jax.lax.top_k(scores_K, 2)
  return {
    "best": visited_KxZ[idx[0]],
    "second": visited_KxZ[idx[1]],
    "best_score": top[0],
    "second_score": top[1],
    "latent_evals": jnp.int32(latent_evals),
    "decoder_calls": jnp.int32(latent_evals) * num_pairs,
  }


def counts_for_budget(method: str, budget: int, population: int = 8) -> dict:
  """Steps/samples that fit `budget` latent evaluations (see module docstring for the costs)."""
  if method == "mean":
    return {}
  if method == "gradient_ascent":
    return {"steps": max((budget - 1) // 3, 0)}
  if method == "random_search":
    return {"num_samples": max(budget - 1, 0)}
  if method == "encoder_sampling":
    return {"num_samples": max(budget, 1)}
  if method == "evolution":
    return {"generations": max((budget - 1) // population, 0), "population": population}
  raise ValueError(f"unknown search method {method!r}; choose from {METHODS}")


def search(
  method: str,
  score_fn,
  mu_MxZ,
  logvar_MxZ,
  spec_mask,
  rng,
  *,
  steps: int = 0,
  lr: float = 0.1,
  num_samples: int = 0,
  scale: float = 0.5,
  generations: int = 0,
  population: int = 8,
  parents: int = 0,
):
  """Runs one search method for one task; returns best/second latents, scores and costs."""
  num_pairs = jnp.sum(spec_mask.astype(jnp.int32))
  rng_start, rng_s = jax.random.split(rng)
  z0 = sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng_start)[0]
  if method == "mean":
    return _top2(z0[None], score_fn(z0[None]), 1, num_pairs)
  if method == "gradient_ascent":
    # a loop, not unrolled: test-time searches run up to hundreds of steps
    vis, sc = gradient_ascent(score_fn, z0[None], steps, lr)
    return _top2(vis[:, 0], sc[:, 0], 3 * steps + 1, num_pairs)
  if method == "random_search":
    cand = jnp.concatenate(
      [z0[None], z0[None] + scale * jax.random.normal(rng_s, (num_samples,) + z0.shape)]
    )
    return _top2(
      cand, jax.lax.map(lambda zz: score_fn(zz[None])[0], cand), num_samples + 1, num_pairs
    )
  if method == "encoder_sampling":
    cand = sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng_s, max(num_samples, 1))
    return _top2(
      cand, jax.lax.map(lambda zz: score_fn(zz[None])[0], cand), cand.shape[0], num_pairs
    )
  if method == "evolution":
    mu_count = parents or max(population // 2, 1)
    w = jnp.log(mu_count + 0.5) - jnp.log(jnp.arange(1, mu_count + 1, dtype=jnp.float32))
    w = w / jnp.sum(w)
    s0 = score_fn(z0[None])[0]

    def gen(carry, key):
      m, sigma, best = carry
      kids = m[None] + sigma * jax.random.normal(key, (population,) + m.shape)
      sc = score_fn(kids)
      sc = jnp.where(jnp.isnan(sc), -jnp.inf, sc)
      top, idx = jax.lax.top_k(sc, mu_count)
      m_new = jnp.sum(w[:, None] * kids[idx], axis=0)
      improved = top[0] > best
      sigma = jnp.where(improved, sigma * 1.5, sigma * 0.8)
      return (m_new, sigma, jnp.maximum(best, top[0])), (kids, sc)

    keys = jax.random.split(rng_s, generations)
    _, (kids, sc) = jax.lax.scan(gen, (z0, jnp.float32(scale), s0), keys)
    vis = jnp.concatenate([z0[None], kids.reshape((-1,) + z0.shape)])
    return _top2(
      vis, jnp.concatenate([s0[None], sc.reshape(-1)]), 1 + generations * population, num_pairs
    )
  raise ValueError(f"unknown search method {method!r}; choose from {METHODS}")
