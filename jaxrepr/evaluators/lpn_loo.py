"""LPN on generated tasks: each pair predicted from the other pairs of its task (the evaluation of
the LPN reference code; Macfarlane & Bonnet, "Searching Latent Program Spaces", Tables 1, 3 and 6).

For every task of the data module's fixed test set (`eval_set`, e.g. the pattern task's 256 tasks)
and every pair i, the other N-1 pairs are the spec; the latent is searched with each configured
search and pair i's output is decoded greedily. A set with a 'pair_mask' (B, N) counts only its
real pairs, each predicted from the other real pairs of its task. Reported per search: exact match
of attempt 1 (`<search>/exact`, what the paper's Table 1 reports), top-2, shape and pixel accuracy,
and `<search>/seconds`, the wall-clock time of the search over the whole set (compiled beforehand,
so compilation is not counted), beside its cost in latent evaluations (methods/lpn/search.py).

Fields:
  searches     {name: overrides of config.model.eval_latent}, e.g.
               {'grad100': {'mode': 'gradient_ascent', 'steps': 100}}. Default: the mean latent.
  num_tasks    size of the test set (placeholder: the data config's default).
  density      the pattern density of the test set (placeholder: the data config's), for OOD sets.
  data         {field: value} overrides of config.data for this test set only, e.g.
               {'eval_programs': 'train'}: the training side of a program split (data/pattern.py).
  batch_size   tasks per jitted call (global; must divide by the device count).
  budgets      latent-evaluation budgets, e.g. (16, 61): adds, for every mode of `budget_modes`, a
               search `<mode>@<budget>` that spends that budget (`counts_for_budget`), plus the
               mean latent, and prints an equal-budget table of exact match after each run.
  budget_modes the search modes compared at each budget (default: every mode but the mean).
  latent_plot  save latent_space_step<N>.png into the workdir: encoder means of the test pairs by
               task, and the decoder's outputs over a grid of latents (the latent's own axes for a
               2-D latent; its plane of the two main principal directions of the encoder means
               otherwise).
"""

from __future__ import annotations

import copy
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrepr import parallel, registry
from jaxrepr import data as data_contract
from jaxrepr.data import pipeline
from jaxrepr.evaluators._batched import sum_over_batches
from jaxrepr.evaluators._lpn_grid_metrics import attempts_metrics
from jaxrepr.errors import ConfigError

METRICS = ("exact", "top2", "shape", "pixel")
BUDGET_MODES = ("gradient_ascent", "random_search", "evolution", "encoder_sampling")


def budget_searches(budgets, modes=BUDGET_MODES) -> dict[str, dict]:
  """{'mean': ..., '<mode>@<budget>': {'mode': mode, 'budget': budget}}: an equal-budget table."""
  searches = {"mean": {"mode": "mean"}}
  for b in budgets:
    if int(b) < 1:
      raise ConfigError(f"lpn_loo budgets must be >= 1 latent evaluation, got {b}")
    for mode in modes:
      if mode == "mean":
        raise ConfigError(
          "lpn_loo budget_modes: the mean latent costs 1; it is always in the table"
        )
      searches[f"{mode}@{int(b)}"] = {"mode": mode, "budget": int(b)}
  return searches


def budget_table(values: dict[str, float], budgets, modes=BUDGET_MODES, digits: int = 3) -> str:
  """The equal-budget table of `values` ({'<search>/exact': ..., '<search>/seconds': ...}): one
  row per search mode, one column per budget in latent evaluations (the mean latent costs 1)."""
  budgets = [int(b) for b in budgets]
  columns = [1] + budgets
  width = max(len(m) for m in ("latent evaluations", *modes)) + 2

  def cell(name):
    if f"{name}/exact" not in values:
      return ""
    seconds = values.get(f"{name}/seconds")
    timing = f" ({seconds:.1f}s)" if seconds is not None else ""
    return f"{values[f'{name}/exact']:.{digits}f}{timing}"

  rows = [("mean", {1: cell("mean")})]
  rows += [(m, {b: cell(f"{m}@{b}") for b in budgets}) for m in modes]
  cell_width = max([len(c) for _, r in rows for c in r.values()] + [8]) + 2
  head = "latent evaluations".ljust(width) + "".join(str(c).ljust(cell_width) for c in columns)
  lines = [head.rstrip()]
  for name, cells in rows:
    lines.append(
      (name.ljust(width) + "".join(cells.get(c, "").ljust(cell_width) for c in columns)).rstrip()
    )
  return "\n".join(lines)


def with_eval_latent(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
  """A copy of `config` whose model.eval_latent carries `overrides` (unknown fields are errors)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for k, v in dict(overrides).items():
      if k not in cfg.model.eval_latent:
        raise ConfigError(
          f"search field {k!r} is not a field of config.model.eval_latent "
          f"({sorted(cfg.model.eval_latent)})"
        )
      cfg.model.eval_latent[k] = v
  return cfg


def _signature(tree) -> tuple:
  """What a compiled program fixes of its arguments: tree structure, and per leaf the shape, dtype,
  weak type and sharding (None for host values, which it places itself)."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple(
    (
      np.shape(x),
      x.dtype if isinstance(x, jax.Array) else np.result_type(x),
      getattr(x, "weak_type", False),
      x.sharding if isinstance(x, jax.Array) else None,
    )
    for x in leaves
  )


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    searches=None,
    num_tasks=None,
    density=None,
    batch_size: int = 64,
    latent_plot: bool = False,
    data=None,
    budgets=None,
    budget_modes=None,
  ):
    del method  # one method per search is built below
    data_cfg = config.data
    if data:
      data_cfg = copy.deepcopy(config.data)
      for k, v in dict(data).items():
        if k not in data_cfg:
          raise ConfigError(f"lpn_loo data field {k!r} is not a field of config.data")
        data_cfg[k] = v
    data = registry.data_module(config)
    if data_contract.eval_set_fn(data) is None:
      raise ConfigError(
        f"config.data.name={config.data.name!r} has no fixed generated test set "
        "(eval_set); the lpn_loo evaluator needs one"
      )
    parallel.check_batch_size(batch_size, mesh, "lpn_loo batch_size")
    self._arrays = data.eval_set(data_cfg, num_tasks=num_tasks, density=density)
    self._mesh, self._batch_size, self._workdir = mesh, batch_size, workdir
    self._config = config
    self._latent_plot = latent_plot and config.model.latent_dim >= 2  # a plane of the latent
    self._budgets = tuple(budgets or ())
    self._budget_modes = tuple(budget_modes or BUDGET_MODES)
    searches = dict(searches) if searches is not None else {}
    if self._budgets:
      searches = budget_searches(self._budgets, self._budget_modes) | searches
    searches = searches or {"mean": {"mode": "mean"}}
    lpn = registry.method_module(config)
    self._fns = {}
    for name, overrides in dict(searches).items():
      predict = lpn.build(with_eval_latent(config, overrides)).predict

      def sums(params, batch, rng, predict=predict):
        pred = predict(params, batch, rng)
        m = attempts_metrics(pred, batch["grids"][..., 1], batch["shapes"][..., 1])
        w = jnp.broadcast_to(batch["mask"][:, None], m["exact"].shape)
        if "pair_mask" in batch:  # empty rows of tasks with fewer pairs are not predictions
          w = w * batch["pair_mask"].astype(w.dtype)
        out = {k: jnp.sum(v * w) for k, v in m.items()}
        out["count"] = jnp.sum(w)
        return out

      self._fns[name] = jax.jit(sums, out_shardings=parallel.replicated(mesh))
    self._compiled = {}

  def _compiled_fn(self, name, params, rng):
    """The search's sums function compiled for this set's batches, so that the timed pass runs
    compiled code only: once per search and layout of (params, rng), since a compiled program
    refuses arguments of another shape, dtype or sharding (a new mesh, params of another layout)
    where the jitted function would compile again."""
    key = (name, _signature(params), _signature(rng))
    if key not in self._compiled:
      first = next(
        pipeline.eval_batches(
          self._arrays,
          self._batch_size,
          shard_index=jax.process_index(),
          shard_count=jax.process_count(),
        )
      )
      batch = parallel.to_global(first, self._mesh)
      self._compiled[key] = self._fns[name].lower(params, batch, rng).compile()
    return self._compiled[key]

  def run(self, params, rng, step) -> dict[str, float]:
    results = {}
    for s, name in enumerate(self._fns):
      key = jax.random.fold_in(rng, s)
      fn = self._compiled_fn(name, params, key)
      t0 = time.perf_counter()
      total = sum_over_batches(fn, params, self._arrays, self._batch_size, self._mesh, key)
      results[f"{name}/seconds"] = time.perf_counter() - t0
      results.update({f"{name}/{k}": total[k] / total["count"] for k in METRICS})
    if self._budgets and jax.process_index() == 0:
      tasks = len(self._arrays["grids"])
      print(
        f"equal-budget search at step {step}, {tasks} tasks (exact match of attempt 1, "
        f"wall-clock over the set):\n{budget_table(results, self._budgets, self._budget_modes)}",
        flush=True,
      )
    if self._latent_plot and jax.process_index() == 0:
      path = os.path.join(self._workdir, f"latent_space_step{step}.png")
      save_latent_space(path, self._config, params, self._arrays, step)
    return results


def latent_plane(mu_PxZ: np.ndarray, extent: float = 3.0):
  """The plane the latent picture shows: (centre (Z,), directions (2, Z), extent, axis names).

  A 2-D latent is shown in its own coordinates over [-extent, extent]. A larger one is shown in
  the plane through the encoder means' centre spanned by their two main principal directions (a
  linear slice of the latent space, not a projection of the decoder), over the range the means
  cover there."""
  z = mu_PxZ.shape[-1]
  if z == 2:
    return np.zeros(2), np.eye(2), extent, ("z[0]", "z[1]")
  centre = mu_PxZ.mean(axis=0)
  _, _, vt = np.linalg.svd(mu_PxZ - centre, full_matrices=False)
  directions = vt[:2]
  reach = float(np.abs((mu_PxZ - centre) @ directions.T).max()) * 1.1 or extent
  return centre, directions, reach, ("principal direction 1", "principal direction 2")


def save_latent_space(
  path: str,
  config,
  params,
  arrays,
  step: int,
  num_tasks: int = 16,
  grid_points: int = 9,
  extent: float = 3.0,
) -> None:
  """The latent space of programs: encoder means by task, decoder outputs on a grid of latents."""
  from jaxrepr import viz
  from jaxrepr.methods.lpn import decode, model

  encoder, decoder = model.modules_from_config(config.model, config.precision)
  grids = jnp.asarray(arrays["grids"][:num_tasks])
  shapes = jnp.asarray(arrays["shapes"][:num_tasks])
  t, n = grids.shape[:2]
  mu, _ = jax.jit(encoder.apply)(
    params["encoder"], grids.reshape((t * n,) + grids.shape[2:]), shapes.reshape((t * n, 2, 2))
  )
  mu = np.asarray(mu, np.float64)
  centre, directions, reach, axes = latent_plane(mu, extent)
  axis = np.linspace(-reach, reach, grid_points)
  ab = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)[:, ::-1]
  # Rows of the mosaic follow the second coordinate, columns the first:
  # ab[i * G + j] = (axis[j], axis[i]).
  zz = centre[None] + ab @ directions
  x = jnp.broadcast_to(grids[0, 0, ..., 0], (len(zz),) + grids.shape[2:4])
  xs = jnp.broadcast_to(shapes[0, 0, :, 0], (len(zz), 2))
  out = jax.jit(lambda p, x, s, z: decode.greedy_decode(decoder, p, x, s, z))(
    params["decoder"], x, xs, jnp.asarray(zz, jnp.float32)
  )
  decoded = np.asarray(out["grid"]).reshape(grid_points, grid_points, *grids.shape[2:4])
  viz.save_latent_plot(
    path,
    (mu - centre) @ directions.T,
    np.repeat(np.arange(t), n),
    decoded,
    reach,
    f"LPN latent space, step {step}",
    axes=axes,
  )
