"""LPN with a pair mask: a task with fewer real pairs than N (ARC tasks of 3 pairs in 4-pair
batches) never lets a pair see a copy of itself.

The old ARC batches repeated a pair to fill N rows, which put the copy in the leave-one-out context
of its twin (Macfarlane & Bonnet, "Searching Latent Program Spaces", Eq. 8: the context of pair i
is the other pairs only). Now the extra rows carry `pair_mask` False. Here the masked rows hold
exactly such copies, then are replaced by other content: through the function the train step
differentiates (`make_loss`), through `predict` (each search method) and through the LOO
evaluator, nothing about the real pairs may move. With the mask all True (the old behaviour) the
same replacement moves the twin's context: the checks can see the leak.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import parallel
from jaxrepr.evaluators import lpn_loo
from jaxrepr.methods import lpn
from jaxrepr.methods.lpn import loss as loss_lib
from jaxrepr.methods.lpn import model as model_lib
from tests.methods.lpn.lpn_testlib import (
  latents_in_shapes_2,
  random_batch,
  tiny_config,
  tiny_params,
)

B, N, SIZE = 2, 4, 3
# Task 0 has 3 real pairs and task 1 has 2; the masked rows start as copies of real pairs (row 3 of
# task 0 is pair 0's twin), as the old sampler made them.
MASK = np.array([[True, True, True, False], [True, True, False, False]])
TWIN_OF = {(0, 3): 0, (1, 2): 0, (1, 3): 1}
TRAIN_MODES = {
  "grad0": dict(mode="mean"),
  "grad2": dict(mode="gradient_ascent", steps=2, stop_gradient=True),
  "grad2_second_order": dict(mode="gradient_ascent", steps=2, stop_gradient=False),
  "grad2_all_positions": dict(mode="gradient_ascent", steps=2, per_position=False),
  "sample4": dict(mode="random_search", num_samples=4),
}
SEARCHES = {
  "mean": {},
  "gradient_ascent": dict(steps=2),
  "random_search": dict(num_samples=3),
  "encoder_sampling": dict(num_samples=3),
  "evolution": dict(generations=2, population=4),
}


def _batches():
  """(batch with twins in the masked rows, the same batch with other content there)."""
  base = random_batch(B, N, SIZE, seed=1)
  other = random_batch(B, N, SIZE, seed=7)
  g, s = base["grids"].copy(), base["shapes"].copy()
  for (t, row), twin in TWIN_OF.items():
    g[t, row], s[t, row] = g[t, twin], s[t, twin]
  twins = {"grids": g, "shapes": s, "pair_mask": MASK}
  g2, s2 = g.copy(), s.copy()
  g2[~MASK], s2[~MASK] = other["grids"][~MASK], other["shapes"][~MASK]
  return twins, {"grids": g2, "shapes": s2, "pair_mask": MASK}


def _unmasked(batch):
  return {**batch, "pair_mask": np.ones_like(MASK)}


@pytest.fixture(scope="module")
def loss_runs():
  """mode -> loss, parameter gradients and contexts, for both batches, masked and not (computed
  for a mode when a test first asks for it, so the CI run compiles only its modes)."""
  cfg = tiny_config(SIZE)
  enc, dec = model_lib.modules_from_config(cfg.model)
  params = tiny_params(SIZE)

  @functools.cache
  def runs(name):
    c = cfg.copy_and_resolve_references()
    c.model.train_latent.update(TRAIN_MODES[name])
    loss = lpn.build(c).loss

    @jax.jit
    def run(batch):
      rng = jax.random.key(3)
      (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, rng)
      terms = loss_lib.loo_terms(
        enc,
        dec,
        params,
        batch["grids"],
        batch["shapes"],
        rng,
        c.model,
        pair_mask=batch["pair_mask"],
      )
      return {"loss": value, "grads": grads, "context": terms["context"]}

    twins, replaced = _batches()
    return [run(b) for b in (twins, replaced, _unmasked(twins), _unmasked(replaced))]

  return runs


# Two training modes in CI (the mean and first-order Grad k); the others with -m heavy.
_CI_MODES = ("grad0", "grad2")


@pytest.mark.parametrize(
  "mode", [m if m in _CI_MODES else pytest.param(m, marks=pytest.mark.heavy) for m in TRAIN_MODES]
)
def test_masked_rows_reach_neither_the_loss_nor_its_gradient_nor_any_context(loss_runs, mode):
  twins, replaced, twins_all, replaced_all = loss_runs(mode)
  np.testing.assert_array_equal(replaced["loss"], twins["loss"])
  for a, b in zip(jax.tree.leaves(replaced["grads"]), jax.tree.leaves(twins["grads"])):
    np.testing.assert_array_equal(a, b)
  real = np.asarray(MASK)
  np.testing.assert_array_equal(
    np.asarray(replaced["context"])[real], np.asarray(twins["context"])[real]
  )
  # The old behaviour (every row real): replacing the copy moves its twin's context and the loss.
  moved = np.abs(np.asarray(replaced_all["context"]) - np.asarray(twins_all["context"])).max(-1)
  for (t, _), twin in TWIN_OF.items():
    assert moved[t, twin] > 1e-3, (mode, t, twin, moved)
  assert abs(float(replaced_all["loss"]) - float(twins_all["loss"])) > 1e-4


def test_all_real_mask_gives_the_unmasked_loss():
  """A batch whose pair mask is all True is the batch without one (pattern data has none)."""
  cfg = tiny_config(SIZE)
  cfg.model.train_latent.update(dict(mode="gradient_ascent", steps=2))
  loss = jax.jit(lpn.build(cfg).loss)
  batch = random_batch(B, N, SIZE, seed=2)
  params = tiny_params(SIZE)
  plain = loss(params, batch, jax.random.key(0))
  masked = loss(params, {**batch, "pair_mask": np.ones((B, N), bool)}, jax.random.key(0))
  for k in plain[1]:
    np.testing.assert_allclose(masked[1][k], plain[1][k], rtol=1e-6, err_msg=k)


def test_bad_pair_mask_is_named():
  method = lpn.build(tiny_config(SIZE))
  batch = random_batch(B, N, SIZE)
  with pytest.raises(ValueError, match="pair_mask"):
    method.loss(tiny_params(SIZE), {**batch, "pair_mask": MASK[:, :3]}, jax.random.key(0))


@pytest.fixture(scope="module")
def predict_runs():
  """Per search: the predictions and the latents the decoder received. `predict` returns four
  fields of `solve_task`; a pass-through spy hands the two attempts' latents out in the place of
  `shapes_2` (grids_2 is still compared)."""
  cfg = tiny_config(SIZE)
  params = tiny_params(SIZE)

  @functools.cache
  def runs(method):  # computed when a test first asks for it
    c = cfg.copy_and_resolve_references()
    c.model.eval_latent.update(dict(mode=method, **SEARCHES[method]))
    predict = lpn.build(c).predict
    with latents_in_shapes_2():
      run = jax.jit(lambda b: predict(params, b, jax.random.key(2)))
      twins, replaced = _batches()
      return [run(b) for b in (twins, replaced, _unmasked(twins), _unmasked(replaced))]

  return runs


# Two searches in CI; the others with -m heavy.
_CI_SEARCHES = ("mean", "gradient_ascent")


@pytest.mark.parametrize(
  "method",
  [m if m in _CI_SEARCHES else pytest.param(m, marks=pytest.mark.heavy) for m in SEARCHES],
)
def test_masked_rows_are_in_no_spec_of_a_real_pair(predict_runs, method):
  twins, replaced, twins_all, replaced_all = predict_runs(method)
  for key in ("shapes_2", "grids", "shapes", "grids_2"):  # shapes_2: the latents (see above)
    np.testing.assert_array_equal(
      np.asarray(replaced[key])[MASK], np.asarray(twins[key])[MASK], err_msg=key
    )
  moved = np.abs(np.asarray(replaced_all["shapes_2"]) - np.asarray(twins_all["shapes_2"]))
  moved = moved.reshape(B, N, -1).max(-1)
  for (t, _), twin in TWIN_OF.items():
    assert moved[t, twin] > 1e-3, (method, t, twin, moved)


def test_loo_evaluator_counts_only_real_pairs(tmp_path, monkeypatch):
  """A decoder with zero weights predicts an empty 1 x 1 grid for every pair: the masked rows are
  made exactly that (solved, if they counted), the real 4 x 4 pattern pairs never are. Every metric
  must be 0 with the mask, and the masked fraction without it."""
  from jaxrepr.data import pattern

  cfg = tiny_config(4)
  cfg.data = pattern.default_config()
  cfg.data.update(dict(grid_rows=4, grid_cols=4, pattern_size=2, colours=3))
  arrays = pattern.eval_set(cfg.data, num_tasks=B, seed=0)
  g, s = arrays["grids"].copy(), arrays["shapes"].copy()
  g[~MASK], s[~MASK] = 0, 1
  params = dict(tiny_params(4))
  params["decoder"] = jax.tree.map(jnp.zeros_like, params["decoder"])
  mesh = parallel.make_mesh(1)
  results = {}
  for name, mask in (("masked", MASK), ("all_real", np.ones_like(MASK))):
    data = {"grids": g, "shapes": s, "pair_mask": mask}
    monkeypatch.setattr(pattern, "eval_set", lambda *a, data=data, **k: data)
    ev = lpn_loo.Evaluator(config=cfg, method=None, mesh=mesh, workdir=str(tmp_path), batch_size=B)
    results[name] = ev.run(params, jax.random.key(0), 0)
  for metric in lpn_loo.METRICS:
    assert results["masked"][f"mean/{metric}"] == 0.0, results
    assert results["all_real"][f"mean/{metric}"] == pytest.approx((~MASK).mean()), results


def test_loo_evaluator_data_overrides_apply_to_its_test_set_only(tmp_path, monkeypatch):
  from jaxrepr.data import pattern
  from jaxrepr.errors import ConfigError

  cfg = tiny_config(4)
  cfg.data = pattern.default_config()
  cfg.data.update(dict(grid_rows=4, grid_cols=4, pattern_size=2, colours=3))
  seen = []
  real = pattern.eval_set
  monkeypatch.setattr(
    pattern, "eval_set", lambda c, **k: seen.append(c.eval_programs) or real(c, **k)
  )
  kw = dict(config=cfg, method=None, mesh=parallel.make_mesh(1), workdir=str(tmp_path))
  lpn_loo.Evaluator(**kw, num_tasks=2, batch_size=2, data={"eval_programs": "train"})
  lpn_loo.Evaluator(**kw, num_tasks=2, batch_size=2)
  assert seen == ["train", "heldout"] and cfg.data.eval_programs == "heldout"
  with pytest.raises(ConfigError, match="no_such_field"):
    lpn_loo.Evaluator(**kw, num_tasks=2, batch_size=2, data={"no_such_field": 1})
