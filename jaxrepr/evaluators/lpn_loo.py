"""LPN on generated tasks: each pair predicted from the other pairs of its task (the evaluation of
the LPN reference code; Macfarlane & Bonnet, "Searching Latent Program Spaces", Tables 1, 3 and 6).

For every task of the data module's fixed test set (`eval_set`, e.g. the pattern task's 256 tasks)
and every pair i, the other N-1 pairs are the spec; the latent is searched with each configured
search and pair i's output is decoded greedily. A set with a 'pair_mask' (B, N) counts only its
real pairs, each predicted from the other real pairs of its task. Reported per search: exact match
of attempt 1 (`<search>/exact`, what the paper's Table 1 reports), top-2, shape and pixel accuracy.

Fields:
  searches     {name: overrides of config.model.eval_latent}, e.g.
               {'grad100': {'mode': 'gradient_ascent', 'steps': 100}}. Default: the mean latent.
  num_tasks    size of the test set (placeholder: the data config's default).
  density      the pattern density of the test set (placeholder: the data config's), for OOD sets.
  data         {field: value} overrides of config.data for this test set only, e.g.
               {'eval_programs': 'train'}: the training side of a program split (data/pattern.py).
  batch_size   tasks per jitted call (global; must divide by the device count).
  latent_plot  for a 2-D latent, save latent_space_step<N>.png into the workdir: encoder means of
               the test pairs by task, and the decoder's outputs over a grid of latents.
"""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrepr import parallel, registry
from jaxrepr import data as data_contract
from jaxrepr.evaluators._batched import sum_over_batches
from jaxrepr.evaluators._lpn_grid_metrics import attempts_metrics
from jaxrepr.errors import ConfigError

METRICS = ("exact", "top2", "shape", "pixel")


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
    self._latent_plot = latent_plot and config.model.latent_dim == 2
    searches = searches if searches is not None else {"mean": {"mode": "mean"}}
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

  def run(self, params, rng, step) -> dict[str, float]:
    results = {}
    for s, (name, fn) in enumerate(self._fns.items()):
      total = sum_over_batches(
        fn, params, self._arrays, self._batch_size, self._mesh, jax.random.fold_in(rng, s)
      )
      results.update({f"{name}/{k}": total[k] / total["count"] for k in METRICS})
    if self._latent_plot and jax.process_index() == 0:
      path = os.path.join(self._workdir, f"latent_space_step{step}.png")
      save_latent_space(path, self._config, params, self._arrays, step)
    return results


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
  """The 2-D latent space of programs: encoder means by task, decoder outputs on a latent grid."""
  from jaxrepr import viz
  from jaxrepr.methods.lpn import decode, model

  encoder, decoder = model.modules_from_config(config.model, config.precision)
  grids = jnp.asarray(arrays["grids"][:num_tasks])
  shapes = jnp.asarray(arrays["shapes"][:num_tasks])
  t, n = grids.shape[:2]
  mu, _ = jax.jit(encoder.apply)(
    params["encoder"], grids.reshape((t * n,) + grids.shape[2:]), shapes.reshape((t * n, 2, 2))
  )
  axis = np.linspace(-extent, extent, grid_points)
  zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)[:, ::-1]
  # Rows of the mosaic follow z[1], columns z[0]: zz[i * G + j] = (axis[j], axis[i]).
  x = jnp.broadcast_to(grids[0, 0, ..., 0], (len(zz),) + grids.shape[2:4])
  xs = jnp.broadcast_to(shapes[0, 0, :, 0], (len(zz), 2))
  out = jax.jit(lambda p, x, s, z: decode.greedy_decode(decoder, p, x, s, z))(
    params["decoder"], x, xs, jnp.asarray(zz, jnp.float32)
  )
  decoded = np.asarray(out["grid"]).reshape(grid_points, grid_points, *grids.shape[2:4])
  viz.save_latent_plot(
    path,
    np.asarray(mu),
    np.repeat(np.arange(t), n),
    decoded,
    extent,
    f"LPN latent space, step {step}",
  )
