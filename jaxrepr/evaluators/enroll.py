"""Open-set enrollment on one embedding source: the SetTransformer against threshold baselines.

Episodes (jaxrepr/methods/enroll/episodes.py) are drawn from the evaluator's `source` (a spec as
`jaxrepr.data.embeddings.source_config` makes: held-out identities of the training source, another
synthetic source, a user's .npz, real-image embeddings) on a grid of scenarios: every
(n_id, walks) in `n_ids` x `walks`, `episodes_per_cell` episodes each, half known probes on
average. Context size K and the distance come from `config.data` (the model was trained with them).

Methods compared on the same episodes (see jaxrepr/methods/enroll/baselines.py):
  set     the SetTransformer: known iff logit > 0, no threshold, nothing tuned on this source.
  nn      NN distance threshold tuned on training-source episodes (`config.data`), then frozen.
  knn     kNN vote (radius and vote fraction) tuned on training-source episodes, then frozen.
  oracle  the NN threshold re-tuned on `tune_episodes` other episodes of this source (the same
          grid, different draws): what a threshold method needs retraining to reach.
Metrics: {method}_accuracy, {method}_f1 (positive = known), and for the ranking scores (set: the
logit, nn: minus the NN distance, knn: the vote fraction) {method}_auc and {method}_eer (oracle
shares nn's ranking, so it has accuracy and F1 only); {method}_acc_nid{n} and {method}_acc_w{w},
the accuracy per gallery size and per walks per identity; nn_threshold and oracle_threshold.
A PNG of accuracy against gallery size and walks per identity, and a JSON of every grid cell, go
to `<workdir>/enroll_<tag>_step<N>.{png,json}`.

When the model reads raw embeddings (`config.model.input='raw'`) and this source has another
dimension, the model cannot run: only the baselines are reported (and `set_skipped` = 1).

Fields: source (spec dict), n_ids, walks (grids), episodes_per_cell (128), tune_episodes (2048),
batch_size (256, global), knn_k (5), tag (file name part, default: the source kind).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrepr import parallel
from jaxrepr.data import embeddings
from jaxrepr.methods.base import generation_key
from jaxrepr.methods.enroll import baselines, episodes
from jaxrepr.errors import ConfigError, DataError

_CTX = ("ctx_dist", "ctx_label", "ctx_walks", "ctx_mask")
_TUNE_OFFSET = 2**29  # tuning ids sit after the evaluation ids, inside int32


def _check_held_out(spec, train_spec, test_src, train_src) -> None:
  """An evaluation on the training source (every field but `split` equal) must see only identities
  training never saw: an override of one side alone (another split seed or test fraction) would
  otherwise score training identities as new ones."""
  fields = (set(spec) | set(train_spec)) - {"split"}
  if any(spec.get(k) != train_spec.get(k) for k in fields):
    return  # another source: its identities are not the training source's
  held_out, seen = np.unique(test_src["labels"]), np.unique(train_src["labels"])
  shared = np.intersect1d(held_out, seen).size
  if shared:
    raise DataError(
      f"config.evals.<name>.source is the training source, but {shared} of its "
      f"{held_out.size} held-out identities are among the {seen.size} training "
      "identities; set its split to 'test' (the training source's to 'train') and "
      "give both the same test_fraction and split_seed"
    )


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    source,
    n_ids=(5, 10, 20, 40),
    walks=(1, 2, 4, 8),
    episodes_per_cell: int = 128,
    tune_episodes: int = 2048,
    batch_size: int = 256,
    knn_k: int = 5,
    tag: str = "",
  ):
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    if config.data.name != "embeddings":
      raise ConfigError(
        f"the enroll evaluator needs config.data.name='embeddings', got {config.data.name!r}"
      )
    spec = (
      source
      if isinstance(source, ml_collections.ConfigDict)
      else ml_collections.ConfigDict(dict(source))
    )
    embeddings.validate_source(spec, "config.evals.<name>.source")
    if episodes_per_cell < 1 or tune_episodes < 2:
      raise ConfigError("config.evals.<name>.episodes_per_cell must be >= 1 and tune_episodes >= 2")
    self._n_ids, self._walks = sorted(int(n) for n in n_ids), sorted(int(w) for w in walks)
    self._test_scn = episodes.scenario_from_config(
      config.data,
      n_id_range=(self._n_ids[0], self._n_ids[-1]),
      walks_range=(self._walks[0], self._walks[-1]),
    )
    self._train_scn = episodes.scenario_from_config(config.data)
    # Built now, before the trainer's first step: a missing file, package or encoder run stops
    # the run at start-up rather than after training.
    test_src = embeddings.make_source(spec)
    self._test_table = episodes.make_table(test_src, tuple(config.data.probe_groups))
    episodes.check_pool(self._test_table, self._test_scn, "config.evals.<name>.source")
    train_src = embeddings.make_source(config.data.source)
    _check_held_out(spec, config.data.source, test_src, train_src)
    self._train_table = episodes.make_table(train_src, tuple(config.data.probe_groups))
    self._model_ok = not (
      config.model.input == "raw"
      and test_src["embeddings"].shape[1] != train_src["embeddings"].shape[1]
    )
    self._root = generation_key(config)
    self._mesh, self._batch_size, self._knn_k = mesh, batch_size, knn_k
    self._per_cell, self._tune_n = episodes_per_cell, tune_episodes
    self._workdir, self._tag = workdir, tag or spec.kind
    self._method = method
    self._fixed = None  # baselines: computed once, at the first run (inside the mesh)
    self._jits: dict = {}
    self._device_tables: dict = {}

  # --------------------------------------------------------------------------------- episodes
  def _grid(self, n_per_cell: int) -> tuple[np.ndarray, np.ndarray]:
    cells = [(n, w) for n in self._n_ids for w in self._walks]
    n_id = np.repeat([c[0] for c in cells], n_per_cell).astype(np.int32)
    walks = np.repeat([c[1] for c in cells], n_per_cell).astype(np.int32)
    return n_id, walks

  def _batches(self, ids: np.ndarray, *extra: np.ndarray):
    """Global batches of (ids, *extra), the last one padded; yields (rows used, global arrays)."""
    sharding = NamedSharding(self._mesh, P(parallel.DATA_AXIS))
    rows = pipeline_rows(self._batch_size)
    for start in range(0, len(ids), self._batch_size):
      idx = np.minimum(np.arange(start, start + self._batch_size), len(ids) - 1)
      arrays = [a[idx][rows] for a in (ids, *extra)]
      yield (
        min(self._batch_size, len(ids) - start),
        [jax.make_array_from_process_local_data(sharding, a) for a in arrays],
      )

  def _run_episodes(
    self, table, scenario, ids, n_id=None, walks=None, params=None, with_model=False
  ):
    """Per-episode host arrays: label, n_id, walks, the context fields and (with_model) logit."""
    if id(table) not in self._device_tables:
      self._device_tables[id(table)] = jax.device_put(
        episodes.device_table(table), parallel.replicated(self._mesh)
      )
    dev_table = self._device_tables[id(table)]
    if (scenario, with_model) not in self._jits:
      method, root = self._method, self._root

      def fn(params, tab, ids, n, w):
        ep = episodes.generate(tab, root, ids, scenario, n, w)
        out = {k: ep[k] for k in ("label", "n_id", "walks") + _CTX}
        if with_model:  # the baselines need no model
          out["logit"] = method.predict(params, ep, jax.random.key(0))["logit"]
        return out

      self._jits[scenario, with_model] = jax.jit(fn, out_shardings=parallel.replicated(self._mesh))
    jitted = self._jits[scenario, with_model]
    parts = []
    extra = () if n_id is None else (n_id, walks)
    for used, arrays in self._batches(ids, *extra):
      n, w = (arrays[1], arrays[2]) if extra else (None, None)
      out = parallel.fetch(jitted(params, dev_table, arrays[0], n, w))
      parts.append({k: v[:used] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def _baselines(self) -> dict:
    off = embeddings.EVAL_ID_OFFSET
    train_ep = self._run_episodes(
      self._train_table, self._train_scn, np.arange(self._tune_n, dtype=np.int32) + off
    )
    y_train = train_ep["label"] == 1
    nn_tau = -baselines.tune_threshold(
      -baselines.nn_distance(train_ep["ctx_dist"], train_ep["ctx_mask"]), y_train
    )[0]
    knn_tau, knn_m, _ = baselines.tune_knn(train_ep, y_train, self._knn_k)
    reps = -(-self._tune_n // (len(self._n_ids) * len(self._walks)))
    tn, tw = self._grid(reps)
    tune_ep = self._run_episodes(
      self._test_table,
      self._test_scn,
      np.arange(len(tn), dtype=np.int32) + off + _TUNE_OFFSET,
      tn,
      tw,
    )
    oracle_tau = -baselines.tune_threshold(
      -baselines.nn_distance(tune_ep["ctx_dist"], tune_ep["ctx_mask"]), tune_ep["label"] == 1
    )[0]
    n_id, walks = self._grid(self._per_cell)
    ids = np.arange(len(n_id), dtype=np.int32) + off
    return {
      "nn_tau": nn_tau,
      "knn_tau": knn_tau,
      "knn_m": knn_m,
      "oracle_tau": oracle_tau,
      "ids": ids,
      "n_id": n_id,
      "walks": walks,
    }

  # -------------------------------------------------------------------------------------- run
  def run(self, params, rng, step) -> dict[str, float]:
    del rng  # episodes are fixed by the data seed; the model is deterministic
    if self._fixed is None:
      self._fixed = self._baselines()
    f = self._fixed
    ep = self._run_episodes(
      self._test_table,
      self._test_scn,
      f["ids"],
      f["n_id"],
      f["walks"],
      params,
      with_model=self._model_ok,
    )
    y = ep["label"] == 1
    d0 = baselines.nn_distance(ep["ctx_dist"], ep["ctx_mask"])
    vote = baselines.knn_vote(
      ep["ctx_dist"], ep["ctx_label"], ep["ctx_walks"], ep["ctx_mask"], self._knn_k, f["knn_tau"]
    )
    decisions = {
      "nn": (d0 <= f["nn_tau"], -d0),
      "knn": (vote >= f["knn_m"] - 1e-9, vote),
      "oracle": (d0 <= f["oracle_tau"], None),
    }
    if self._model_ok:
      decisions = {"set": (ep["logit"] > 0, ep["logit"]), **decisions}
    out: dict[str, float] = {
      "nn_threshold": f["nn_tau"],
      "oracle_threshold": f["oracle_tau"],
      "set_skipped": float(not self._model_ok),
    }
    cells = []
    for name, (pred, score) in decisions.items():
      if score is None:
        out.update(
          {f"{name}_accuracy": baselines.accuracy(pred, y), f"{name}_f1": baselines.f1(pred, y)}
        )
      else:
        out.update({f"{name}_{k}": v for k, v in baselines.scores(pred, score, y).items()})
      for n in self._n_ids:
        s = ep["n_id"] == n
        out[f"{name}_acc_nid{n}"] = baselines.accuracy(pred[s], y[s])
      for w in self._walks:
        s = ep["walks"] == w
        out[f"{name}_acc_w{w}"] = baselines.accuracy(pred[s], y[s])
      for n in self._n_ids:
        for w in self._walks:
          s = (ep["n_id"] == n) & (ep["walks"] == w)
          cells.append(
            {
              "method": name,
              "n_id": n,
              "walks": w,
              "accuracy": baselines.accuracy(pred[s], y[s]),
              "episodes": int(s.sum()),
            }
          )
    if jax.process_index() == 0 and self._workdir:
      self._save(step, out, cells, list(decisions))
    return out

  def _save(self, step: int, out: dict, cells: list, names: list) -> None:
    os.makedirs(self._workdir, exist_ok=True)
    stem = os.path.join(self._workdir, f"enroll_{self._tag}_step{step}")
    with open(stem + ".json", "w") as fh:
      json.dump({"step": step, "metrics": out, "cells": cells}, fh, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
      "set": "SetTransformer (no tuning)",
      "nn": "NN threshold (frozen)",
      "knn": "kNN vote (frozen)",
      "oracle": "NN threshold re-tuned (oracle)",
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, grid, title in (
      (axes[0], "nid", self._n_ids, "gallery identities n_id"),
      (axes[1], "w", self._walks, "walks per identity"),
    ):
      for name in names:
        ax.plot(
          grid,
          [out[f"{name}_acc_{key}{g}"] for g in grid],
          marker="o",
          label=labels[name],
          linestyle="--" if name == "oracle" else "-",
        )
      ax.set_xlabel(title)
      ax.set_xscale("log", base=2)
      ax.set_xticks(grid, [str(g) for g in grid])
      ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"open-set enrollment on {self._tag} (step {step})")
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=100)
    plt.close(fig)


def pipeline_rows(batch_size: int) -> slice:
  from jaxrepr.data import pipeline

  return pipeline.local_slice(batch_size, jax.process_index(), jax.process_count())
