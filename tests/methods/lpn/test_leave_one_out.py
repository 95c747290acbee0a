"""LPN leave-one-out: pair i never informs the latent that scores or predicts pair i.

Paper (Macfarlane & Bonnet, "Searching Latent Program Spaces", Eq. 8 and Alg. 2): the context of
pair i is built from the other N-1 pairs only. In training this holds for every latent mode (mean
[Grad 0], gradient ascent [Grad k], with the gradient through the update [Grad k **], random
search [Sample S]); in `predict`, which produces every exact-match number of the LOO evaluator, it
holds for every test-time search of `search.METHODS`, because the other pairs are the spec.

Each check goes through the function the real path calls: `loss.loo_terms` (what `make_loss`, the
function the train step differentiates, calls) returns the per-pair contexts that the loss decodes
pair i with; `predict` is run as built, with a pass-through spy that records the latents its search
hands to the greedy decoder. For every pair p, pair p's output (grid and shape) is replaced: pair
p's latent and prediction must not move, and every other pair's latent must (p is in their specs),
which shows that the checks can see a leak.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import latent_ascent
from jaxrepr.methods.lpn import loss as loss_lib
from jaxrepr.methods.lpn import model as model_lib
from jaxrepr.methods.lpn import search as search_lib
from tests.methods.lpn.lpn_testlib import (
  latents_in_shapes_2,
  random_batch,
  tiny_config,
  tiny_params,
)

B, N, SIZE = 2, 4, 3

# configs/lpn.py variants grad0, grad1, grad1ss, sample25; the gradient modes take 2 steps here, so
# that the searched latent depends on the gradients' magnitudes and not only on their signs (the
# first step of a fresh Adam is about lr * sign(g)): a spec that wrongly held pair i would then move
# pair i's latent by a visible amount.
TRAIN_MODES = {
  "grad0": dict(mode="mean"),
  "grad2": dict(mode="gradient_ascent", steps=2, stop_gradient=True),
  "grad2_second_order": dict(mode="gradient_ascent", steps=2, stop_gradient=False),
  "sample4": dict(mode="random_search", num_samples=4),
}
SEARCHES = {
  "mean": {},
  "gradient_ascent": dict(steps=2),
  "random_search": dict(num_samples=3),
  "encoder_sampling": dict(num_samples=3),
  "evolution": dict(generations=2, population=4),
}
assert set(SEARCHES) == set(search_lib.METHODS)  # a new search method must be added here

# The latent of a pair whose spec changed moves by far more than this (measured: > 0.06); rounding
# noise in an unchanged latent is 0 (the same arithmetic on the same numbers).
MOVED = 1e-3
SAME = dict(rtol=0, atol=1e-6)


def _with_new_output(batch, p, seed):
  """`batch` with pair p's output grid and output shape replaced by those of another draw."""
  other = random_batch(B, N, SIZE, seed=seed)
  g, s = batch["grids"].copy(), batch["shapes"].copy()
  g[:, p, ..., 1] = other["grids"][:, p, ..., 1]
  s[:, p, :, 1] = other["shapes"][:, p, :, 1]
  assert np.all(np.any(g[:, p] != batch["grids"][:, p], axis=(1, 2, 3)))
  return {"grids": g, "shapes": s}


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_config(SIZE)
  batch = random_batch(B, N, SIZE, seed=1)
  params = tiny_params(SIZE)
  changed = [_with_new_output(batch, p, seed=100 + p) for p in range(N)]
  return cfg, params, batch, changed


def _check(base_latent, new_latent, p, what):
  """Pair p's latent is unchanged; every other pair's latent moved, in every task."""
  np.testing.assert_allclose(
    new_latent[:, p],
    base_latent[:, p],
    **SAME,
    err_msg=f"{what}: pair {p}'s own output moved its latent",
  )
  others = [q for q in range(N) if q != p]
  moved = np.abs(new_latent[:, others] - base_latent[:, others])
  moved = moved.reshape(B, len(others), -1).max(-1)
  assert np.all(moved > MOVED), (what, p, moved)


@pytest.fixture(scope="module")
def train_runs(setup):
  """For each training mode: per-pair contexts and loss terms of the batch and of each change."""
  cfg, params, batch, changed = setup
  enc, dec = model_lib.modules_from_config(cfg.model)
  models = {}
  for name, lat in TRAIN_MODES.items():
    m = cfg.model.copy_and_resolve_references()
    m.train_latent.update(lat)
    models[name] = m

  @jax.jit
  def run(grids, shapes, ref_context_MxBxNxZ):
    out = {
      name: loss_lib.loo_terms(enc, dec, params, grids, shapes, jax.random.key(5), m)
      for name, m in models.items()
    }
    # The teacher-forced NLL of these pairs under each mode's reference contexts (one decoder
    # call for all modes): pair i's loss term must be its NLL under the context that never saw it.
    lead = ref_context_MxBxNxZ.shape[:1] + grids.shape[:2]
    rescored = -latent_ascent.pair_scores(
      dec,
      params["decoder"],
      jnp.broadcast_to(grids, lead + grids.shape[2:]),
      jnp.broadcast_to(shapes, lead + shapes.shape[2:]),
      ref_context_MxBxNxZ,
    )[0]
    return {
      name: {"context": out[name]["context"], "nll": out[name]["nll"], "rescored": rescored[k]}
      for k, name in enumerate(models)
    }

  base = run(batch["grids"], batch["shapes"], jnp.zeros((len(models), B, N, cfg.model.latent_dim)))
  ref = jnp.stack([base[name]["context"] for name in models])
  return base, [run(c["grids"], c["shapes"], ref) for c in changed]


@pytest.mark.parametrize("mode", list(TRAIN_MODES))
def test_training_context_of_a_pair_never_sees_its_output(train_runs, mode):
  base, runs = train_runs
  chex.assert_shape([base[mode]["context"]], (B, N, tiny_config(SIZE).model.latent_dim))
  for p, new in enumerate(runs):
    _check(np.asarray(base[mode]["context"]), np.asarray(new[mode]["context"]), p, mode)
    # Pair p's loss term: its new output is only the target, decoded under the old context.
    np.testing.assert_allclose(
      new[mode]["nll"][:, p], new[mode]["rescored"][:, p], rtol=1e-5, atol=1e-5
    )


@pytest.fixture(scope="module")
def predict_runs(setup):
  """For each search: predict's outputs plus the latents it decoded with, for the batch and each
  change. `predict` returns four fields of `solve_task`; the spy hands the two attempts' latents
  (which the decoder received) out in the place of `shapes_2` (grids_2 is still compared)."""
  cfg, params, batch, changed = setup
  predicts = {}
  for method, kw in SEARCHES.items():
    c = cfg.copy_and_resolve_references()
    c.model.eval_latent.update(dict(mode=method, **kw))
    predicts[method] = lpn.build(c).predict
  with latents_in_shapes_2():
    run = jax.jit(lambda b: {m: f(params, b, jax.random.key(2)) for m, f in predicts.items()})
    base = run(batch)
    runs = [run(c) for c in changed]

  def named(r):
    return {
      m: {
        "latents": o["shapes_2"],
        "grids": o["grids"],
        "shapes": o["shapes"],
        "grids_2": o["grids_2"],
      }
      for m, o in r.items()
    }

  return named(base), [named(r) for r in runs]


@pytest.mark.parametrize("method", list(SEARCHES))
def test_prediction_of_a_pair_never_sees_its_output(predict_runs, method):
  base, runs = predict_runs
  chex.assert_shape(base[method]["latents"], (B, N, 2, tiny_config(SIZE).model.latent_dim))
  for p, new in enumerate(runs):
    _check(np.asarray(base[method]["latents"]), np.asarray(new[method]["latents"]), p, method)
    for key in ("grids", "shapes", "grids_2"):
      np.testing.assert_array_equal(
        new[method][key][:, p],
        base[method][key][:, p],
        err_msg=f"{method}: pair {p}'s own output moved its {key}",
      )
