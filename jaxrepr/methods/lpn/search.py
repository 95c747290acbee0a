"""Test-time latent program search for one task (Macfarlane & Bonnet, "Searching Latent Program
Spaces": Eq. 4, Alg. 1, §5.4 and Fig. 2, Appendix B.11 and Table 11).

A spec is M pairs (M, R, C, 2) with shapes (M, 2, 2) and a mask (M,) for padded pairs (ARC specs
have 2-10 pairs). score(z) = sum over valid spec pairs of log p(R) + log p(C) + mean cell log p
(teacher forced). Every method is a pure, jittable function of one task (vmap it over tasks or
restarts), starts from a set of S start latents (fresh key per call), keeps every latent it visits
and returns the best and second best (attempts 1 and 2), or the best `keep` of them.

Starts (`start`; S of them, n <= S valid):
  - 'encoder'    S = 1: the mean over valid spec pairs of one posterior sample each (default);
  - 'prior'      S = 1: the same with every pair's posterior replaced by the prior N(0, I), i.e. the
                 mean of one N(0, I) draw per valid pair, as the reference code's
                 `remove_encoder_latents` (Fig. 2's "prior" bars, Table 11's "Gaussian init"; the
                 paper's text says one prior sample, whose scale is sqrt(M) times larger). The
                 encoder is not run (`uses_encoder`): the no-encoder setting;
  - 'pairs'      S = M: each valid spec pair's own posterior sample (the reference code's
                 `include_all_latents`, without the mean); padded pairs are no starts (n = valid
                 pairs). With one pair it is the 'encoder' start, from the same random numbers;
  - 'perturbed'  S = 1 + P: the encoder start and P points start + start_scale * eps (the reference
                 code's `random_perturbation`; Table 11's "Encoder init + local search" is
                 random search or evolution from the encoder start).

Methods and their cost in latent evaluations (one evaluation = one decoder pass per valid spec pair;
a gradient step is one forward and one backward pass and counts as 3 evaluations, the usual
backward ~ 2 x forward estimate):
  - 'mean'              n:            the starts only [Grad 0];
  - 'gradient_ascent'   n (3 k + 1):  from each start, k Adam steps (b1 = b2 = 0.9) on -score,
                                      per-latent gradient clipping at norm 1, a constant or cosine
                                      learning rate (`latent_ascent.learning_rate`); the best two
                                      of the n (k + 1) visited latents [Grad k] (`latent_ascent`,
                                      as in training);
  - 'random_search'     n + S':       the starts and S' points centre + scale * eps, the centres
                                      taking the valid starts in turn (reference code) [Sample S'];
  - 'encoder_sampling'  S':           S' latents drawn as the 'encoder' (or 'prior') start is
                                      (paper Table 11, "Encoder sampling");
  - 'evolution'         n + G L + r:  a (mu/mu_w, lambda)-ES of our design (the paper names
                                      evolutionary search as future work) from the best start: G
                                      generations of L = lambda offspring m + sigma eps; m <- the
                                      log-rank-weighted mean of the best mu; sigma *= 1.5 when a
                                      generation beats the best so far, else *= 0.8 (a
                                      one-fifth-success-style rule); elitist bookkeeping; then a
                                      last generation of r < L offspring, so that a budget is
                                      spent whole.
`counts_for_budget` turns a budget of latent evaluations into each method's steps/samples, with
all S starts counted (a spec with padded pairs spends less, never more), so that methods are
compared at equal compute; every result reports `latent_evals` and `decoder_calls`. Random search,
encoder sampling and the 'mean' starts score their candidates `score_batch` per decoder call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrepr.methods.lpn.latent_ascent import gradient_ascent, learning_rate, pair_scores

METHODS = ("mean", "gradient_ascent", "random_search", "encoder_sampling", "evolution")
STARTS = ("encoder", "prior", "pairs", "perturbed")
SAMPLED_STARTS = ("encoder", "prior")  # the starts encoder sampling can draw from


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


def uses_encoder(start: str) -> bool:
  """Whether the `start` needs the encoder's posterior ('prior' does not)."""
  return start != "prior"


def sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng, num: int = 1):
  """`num` latents (num, Z): each the mean over valid spec pairs of one posterior sample per
  pair."""
  eps = jax.random.normal(rng, (num,) + mu_MxZ.shape)
  z = mu_MxZ[None] + jnp.exp(0.5 * logvar_MxZ)[None] * eps
  w = spec_mask.astype(jnp.float32)[None, :, None]
  return jnp.sum(z * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def num_starts(start: str, num_spec_pairs: int, perturbations: int = 0) -> int:
  """S, the (static) number of start latents of `start` for a spec of M = num_spec_pairs."""
  if start in ("encoder", "prior"):
    return 1
  if start == "pairs":
    return num_spec_pairs
  if start == "perturbed":
    return 1 + perturbations
  raise ValueError(f"unknown search start {start!r}; choose from {STARTS}")


def start_latents(start, mu_MxZ, logvar_MxZ, spec_mask, rng, perturbations=0, scale=0.5):
  """The S start latents (S, Z) of `start` (module docstring) and which are valid (S,).

  `mu_MxZ`, `logvar_MxZ`: the posterior of each spec pair; `search` passes zeros, the prior, for
  'prior'."""
  one = jnp.ones((1,), bool)
  if start in ("encoder", "prior"):
    return sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng), one
  if start == "pairs":
    # the random numbers of `sample_mean_latent`'s single draw: one pair gives the encoder start
    eps_MxZ = jax.random.normal(rng, (1,) + mu_MxZ.shape)[0]
    z_MxZ = mu_MxZ + jnp.exp(0.5 * logvar_MxZ) * eps_MxZ
    return jnp.where(spec_mask[:, None], z_MxZ, 0.0), spec_mask
  if start == "perturbed":
    k_mean, k_noise = jax.random.split(rng)
    z0 = sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, k_mean)
    noise = scale * jax.random.normal(k_noise, (perturbations, z0.shape[-1]))
    return jnp.concatenate([z0, z0 + noise]), jnp.ones((1 + perturbations,), bool)
  raise ValueError(f"unknown search start {start!r}; choose from {STARTS}")


def score_in_batches(score_fn, cand_NxZ, batch: int):
  """score_fn over N candidates, `batch` per call (a loop over the full chunks, then the rest)."""
  n, z = cand_NxZ.shape
  if n <= batch:
    return score_fn(cand_NxZ)
  full = n // batch
  parts = []
  if full:
    chunks = cand_NxZ[: full * batch].reshape(full, batch, z)
    parts.append(jax.lax.map(score_fn, chunks).reshape(full * batch))
  if n > full * batch:
    parts.append(score_fn(cand_NxZ[full * batch :]))
  return jnp.concatenate(parts)


def _ranked(visited_KxZ, scores_K, latent_evals, num_pairs, keep: int = 2):
  """The best `keep` visited latents by score (fewer visited ones are repeated)."""
  scores_K = jnp.where(jnp.isnan(scores_K), -jnp.inf, scores_K)
  if scores_K.shape[0] < keep:
    reps = -(-keep // scores_K.shape[0])
    visited_KxZ = jnp.concatenate([visited_KxZ] * reps)
    scores_K = jnp.concatenate([scores_K] * reps)
  top, idx = jax.lax.top_k(scores_K, keep)
  out = {
    "best": visited_KxZ[idx[0]],
    "second": visited_KxZ[idx[1]],
    "best_score": top[0],
    "second_score": top[1],
    "latent_evals": jnp.asarray(latent_evals, jnp.int32),
    "decoder_calls": jnp.asarray(latent_evals, jnp.int32) * num_pairs,
  }
  if keep > 1:  # the best `keep` latents in order, for attempt 2's choice (decode.py)
    out["ranked"], out["ranked_scores"] = visited_KxZ[idx], top
  return out


def counts_for_budget(
  method: str, budget: int, population: int = 8, starts: int = 1, start: str = "encoder"
) -> dict:
  """Steps/samples that fit `budget` latent evaluations with S = `starts` start latents (see the
  module docstring for the costs); the remainder of a budget is spent by evolution's last
  generation, and is left over by gradient ascent (a step costs 3 evaluations per start)."""
  if method == "mean":
    return {}
  if method == "gradient_ascent":
    return {"steps": max((budget // starts - 1) // 3, 0)}
  if method == "random_search":
    return {"num_samples": max(budget - starts, 0)}
  if method == "encoder_sampling":
    if start not in SAMPLED_STARTS:
      raise ValueError(f"encoder sampling draws from {SAMPLED_STARTS}, not start {start!r}")
    return {"num_samples": max(budget, 1)}
  if method == "evolution":
    rest = max(budget - starts, 0)
    return {
      "generations": rest // population,
      "population": population,
      "last_population": rest % population,
    }
  raise ValueError(f"unknown search method {method!r}; choose from {METHODS}")


def _evolution(score_fn, starts, valid, rng, scale, generations, population, parents, last):
  """(visited (K, Z), their scores (K,)) of the ES (module docstring) from the best start."""
  mu_count = parents or max(population // 2, 1)
  w = jnp.log(mu_count + 0.5) - jnp.log(jnp.arange(1, mu_count + 1, dtype=jnp.float32))
  w = w / jnp.sum(w)
  s_start = jnp.where(valid, score_fn(starts), -jnp.inf)
  first = jnp.argmax(jnp.where(jnp.isnan(s_start), -jnp.inf, s_start))
  z0, s0 = starts[first], s_start[first]

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

  keys = jax.random.split(rng, generations)
  (m, sigma, _), (kids, sc) = jax.lax.scan(gen, (z0, jnp.float32(scale), s0), keys)
  vis = [starts, kids.reshape((-1,) + z0.shape)]
  scores = [s_start, sc.reshape(-1)]
  if last:  # the budget's remainder: one smaller generation from the final mean and step size
    tail = m[None] + sigma * jax.random.normal(
      jax.random.fold_in(rng, generations), (last,) + m.shape
    )
    vis.append(tail)
    scores.append(score_fn(tail))
  return jnp.concatenate(vis), jnp.concatenate(scores)


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
  lr_schedule: str = "constant",
  num_samples: int = 0,
  scale: float = 0.5,
  generations: int = 0,
  population: int = 8,
  parents: int = 0,
  last_population: int = 0,
  start: str = "encoder",
  start_perturbations: int = 0,
  start_scale: float = 0.5,
  score_batch: int = 1,
  keep: int = 2,
):
  """Runs one search method for one task; returns best/second latents, scores and costs (and the
  best `keep` latents, 'ranked' (keep, Z), with their 'ranked_scores', when keep > 1)."""
  num_pairs = jnp.sum(spec_mask.astype(jnp.int32))
  rng_start, rng_s = jax.random.split(rng)
  if not uses_encoder(start):  # the prior N(0, I) in the place of every pair's posterior
    mu_MxZ, logvar_MxZ = jnp.zeros_like(mu_MxZ), jnp.zeros_like(logvar_MxZ)
  if method == "encoder_sampling":
    if start not in SAMPLED_STARTS:
      raise ValueError(f"encoder sampling draws from {SAMPLED_STARTS}, not start {start!r}")
    cand = sample_mean_latent(mu_MxZ, logvar_MxZ, spec_mask, rng_s, max(num_samples, 1))
    sc = score_in_batches(score_fn, cand, score_batch)
    return _ranked(cand, sc, cand.shape[0], num_pairs, keep)
  z_SxZ, valid_S = start_latents(
    start, mu_MxZ, logvar_MxZ, spec_mask, rng_start, start_perturbations, start_scale
  )
  n_valid = jnp.sum(valid_S.astype(jnp.int32))
  if method == "mean":
    sc = jnp.where(valid_S, score_in_batches(score_fn, z_SxZ, score_batch), -jnp.inf)
    return _ranked(z_SxZ, sc, n_valid, num_pairs, keep)
  if method == "gradient_ascent":
    # a loop, not unrolled: test-time searches run up to hundreds of steps
    vis, sc = gradient_ascent(score_fn, z_SxZ, steps, learning_rate(lr, lr_schedule, steps))
    sc = jnp.where(valid_S[None], sc, -jnp.inf)
    z = z_SxZ.shape[-1]
    return _ranked(vis.reshape(-1, z), sc.reshape(-1), n_valid * (3 * steps + 1), num_pairs, keep)
  if method == "random_search":
    # sample j is centred on the (j mod n)-th valid start
    order = jnp.argsort(~valid_S, stable=True)
    centres = order[jnp.arange(num_samples) % jnp.maximum(n_valid, 1)]
    eps = jax.random.normal(rng_s, (num_samples,) + z_SxZ.shape[1:])
    cand = jnp.concatenate([z_SxZ, z_SxZ[centres] + scale * eps])
    sc = score_in_batches(score_fn, cand, score_batch)
    sc = sc.at[: z_SxZ.shape[0]].set(jnp.where(valid_S, sc[: z_SxZ.shape[0]], -jnp.inf))
    return _ranked(cand, sc, n_valid + num_samples, num_pairs, keep)
  if method == "evolution":
    vis, sc = _evolution(
      score_fn, z_SxZ, valid_S, rng_s, scale, generations, population, parents, last_population
    )
    evals = n_valid + generations * population + last_population
    return _ranked(vis, sc, evals, num_pairs, keep)
  raise ValueError(f"unknown search method {method!r}; choose from {METHODS}")
