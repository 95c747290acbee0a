"""The LPN main job's equal-budget table and latent picture (jaxrepr/evaluators/lpn_loo.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrepr import parallel
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators import lpn_loo
from jaxrepr.methods.lpn import search
from tests.methods.lpn.lpn_testlib import tiny_config, tiny_params


def test_budget_searches_spend_each_budget_with_every_mode():
  searches = lpn_loo.budget_searches((16, 61), ("gradient_ascent", "evolution"))
  assert list(searches) == [
    "mean",
    "gradient_ascent@16",
    "evolution@16",
    "gradient_ascent@61",
    "evolution@61",
  ]
  # 16 and 61 evaluations are Grad 5 and Grad 20 (3 per gradient step plus the start)
  assert search.counts_for_budget("gradient_ascent", 16) == {"steps": 5}
  assert search.counts_for_budget("gradient_ascent", 61) == {"steps": 20}
  with pytest.raises(ConfigError, match="budgets"):
    lpn_loo.budget_searches((0,))
  with pytest.raises(ConfigError, match="mean"):
    lpn_loo.budget_searches((4,), ("mean",))


def test_budget_table_puts_each_value_under_its_budget():
  values = {
    "mean/exact": 0.5,
    "mean/seconds": 1.0,
    "gradient_ascent@16/exact": 0.9,
    "gradient_ascent@16/seconds": 2.0,
    "gradient_ascent@61/exact": 0.97,
    "random_search@61/exact": 0.8,
  }
  lines = lpn_loo.budget_table(values, (16, 61), ("gradient_ascent", "random_search")).splitlines()
  head = lines[0]
  cols = {name: head.index(name) for name in ("1", "16", "61")}
  row = {line.split()[0]: line for line in lines[1:]}
  assert row["mean"][cols["1"] :].startswith("0.500 (1.0s)")
  assert row["gradient_ascent"][cols["16"] :].startswith("0.900 (2.0s)")
  assert row["gradient_ascent"][cols["61"] :].startswith("0.970")
  assert row["random_search"][cols["61"] :].startswith("0.800")
  assert row["random_search"][cols["16"] : cols["61"]].strip() == ""  # not measured: blank


def test_latent_plane_is_the_latent_itself_in_2d_and_the_main_directions_otherwise():
  rng = np.random.default_rng(0)
  mu2 = rng.normal(size=(40, 2))
  centre, directions, reach, axes = lpn_loo.latent_plane(mu2, 3.0)
  np.testing.assert_array_equal(centre, 0.0)
  np.testing.assert_array_equal(directions, np.eye(2))
  assert reach == 3.0 and axes == ("z[0]", "z[1]")
  # 8-D means spread along two known directions: the plane spans them, the points fit inside it
  basis = np.linalg.qr(rng.normal(size=(8, 2)))[0].T
  coords = rng.normal(size=(60, 2)) * np.array([5.0, 2.0])
  mu8 = 1.5 + coords @ basis
  centre, directions, reach, _ = lpn_loo.latent_plane(mu8)
  np.testing.assert_allclose(centre, mu8.mean(0))
  np.testing.assert_allclose(np.linalg.norm(directions @ basis.T, axis=1), 1.0, atol=1e-8)
  projected = (mu8 - centre) @ directions.T
  assert np.abs(projected).max() <= reach
  np.testing.assert_allclose(centre + projected @ directions, mu8, atol=1e-8)


@pytest.mark.heavy  # about 20 s; guards a layout change that no configured run makes today
def test_evaluator_compiles_again_for_params_of_another_layout(tmp_path):
  """The compiled search programs are cached per search and argument layout: params placed
  differently (replicated, then rows split over the devices) get a program of their own, where a
  program compiled for the first layout would refuse them, and the metrics are the same."""
  from jaxrepr.data import pattern

  cfg = tiny_config(4)
  cfg.data = pattern.default_config()
  cfg.data.update(dict(grid_rows=4, grid_cols=4, pattern_size=2, colours=3))
  mesh = parallel.make_mesh(2)
  params = tiny_params(4)

  def rows_split(x):
    return P(parallel.DATA_AXIS) if x.ndim and x.shape[0] % 2 == 0 else P()

  layouts = {
    "replicated": jax.device_put(params, NamedSharding(mesh, P())),
    "rows_split": jax.device_put(
      params, jax.tree.map(lambda x: NamedSharding(mesh, rows_split(x)), params)
    ),
  }
  assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(layouts["rows_split"]))
  ev = lpn_loo.Evaluator(
    config=cfg, method=None, mesh=mesh, workdir=str(tmp_path), num_tasks=2, batch_size=2
  )
  results = {}
  with jax.set_mesh(mesh):
    for name, placed in layouts.items():
      out = ev.run(placed, jax.random.key(0), 0)
      results[name] = {k: v for k, v in out.items() if not k.endswith("/seconds")}
  assert len(ev._compiled) == 2
  assert results["replicated"] == pytest.approx(results["rows_split"]), results
