"""Open-set enrollment on one embedding source: the SetTransformer against threshold baselines.

Episodes (jaxrepr/methods/enroll/episodes.py) are drawn from the evaluator's `source` (a spec as
`jaxrepr.data.embeddings.source_config` makes: held-out identities of the training source, another
synthetic source, a user's .npz, real-image embeddings) on a grid of scenarios: every
(n_id, walks) in `n_ids` x `walks`, `episodes_per_cell` episodes each, known probes with the
training prior (`config.data.known_fraction`). Context size K and the distance come from
`config.data` (the model was trained with them).

Methods compared on the same episodes (jaxrepr/evaluators/_enroll_decide.py, the baselines from
jaxrepr/methods/enroll/baselines.py):
  set         the SetTransformer: known iff logit > 0, no threshold, nothing tuned on this source.
  nn          NN distance threshold tuned on training-source episodes (`config.data`), then frozen.
  knn         kNN vote (radius and vote fraction) tuned on training-source episodes, then frozen.
  oracle      the NN threshold re-tuned on `tune_episodes` other episodes of this source (the same
              grid, different draws): what a threshold method needs retraining to reach.
  oracle_knn  the kNN vote re-tuned on those episodes.
Metrics: {method}_accuracy, {method}_f1 (positive = known), and for the ranking scores (set: the
logit, nn: minus the NN distance, knn and oracle_knn: the vote fraction) {method}_auc and
{method}_eer (oracle shares nn's ranking, so it has accuracy and F1 only); {method}_acc_nid{n} and
{method}_acc_w{w}, the accuracy per gallery size and per walks per identity; nn_threshold and
oracle_threshold.

Test-time prior (`known_fractions`, e.g. (0.1, 0.3, 0.5, 0.7, 0.9)): the same episodes with the
probe's known/new label redrawn with each probability p (one uniform per episode, known iff u < p,
so the sweep is paired), scored by the SetTransformer's unchanged decision (logit > 0), the frozen
baselines, and both oracles re-tuned on test-source episodes drawn at that p:
{method}_accuracy_known{pct} and {method}_f1_known{pct} (pct = 100 p), realised_known{pct}.

Files: `<workdir>/enroll_<tag>_step<N>.json` (every metric, every grid cell, every prior, the
thresholds), `.png` (accuracy against gallery size and walks per identity) and, with priors,
`_prior.png` (accuracy and F1 against the prior). launch/enroll_report.py tabulates and plots the
JSON of several runs.

When the model reads raw embeddings (`config.model.input='raw'`) and this source has another
dimension, the model cannot run: only the baselines are reported (and `set_skipped` = 1).

Fields: source (spec dict), n_ids, walks (grids), episodes_per_cell (128), tune_episodes (2048),
batch_size (256, global), knn_k (5), known_fractions (() = no prior sweep), tag (file name part,
default: the source kind).
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
from jaxrepr.errors import ConfigError, DataError
from jaxrepr.evaluators import _enroll_decide as decide, _enroll_plot as enroll_plot
from jaxrepr.methods.enroll import episodes

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
    known_fractions=(),
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
    self._priors = tuple(float(p) for p in known_fractions)
    if not all(0.0 < p < 1.0 for p in self._priors):
      raise ConfigError(
        f"config.evals.<name>.known_fractions={known_fractions} must lie strictly between 0 and 1"
      )
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
    self, table, scenario, ids, n_id=None, walks=None, params=None, with_model=False, *, known
  ):
    """Per-episode host arrays: label, n_id, walks, the context fields and (with_model) logit.
    `known` (per episode) is the probability of a known probe: a traced input, so one compiled
    program serves every prior."""
    if id(table) not in self._device_tables:
      self._device_tables[id(table)] = jax.device_put(
        episodes.device_table(table), parallel.replicated(self._mesh)
      )
    dev_table = self._device_tables[id(table)]
    if (scenario, with_model) not in self._jits:
      method, root = self._method, self._root

      def fn(params, tab, ids, n, w, p):
        ep = episodes.generate(tab, root, ids, scenario, n, w, p)
        out = {k: ep[k] for k in ("label", "n_id", "walks") + _CTX}
        if with_model:  # the baselines need no model
          out["logit"] = method.predict(params, ep, jax.random.key(0))["logit"]
        return out

      self._jits[scenario, with_model] = jax.jit(fn, out_shardings=parallel.replicated(self._mesh))
    jitted = self._jits[scenario, with_model]
    parts = []
    extra = (known,) if n_id is None else (known, n_id, walks)
    for used, arrays in self._batches(ids, *extra):
      n, w = (arrays[2], arrays[3]) if n_id is not None else (None, None)
      out = parallel.fetch(jitted(params, dev_table, arrays[0], n, w, arrays[1]))
      parts.append({k: v[:used] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def _known(self, ids: np.ndarray, p: float) -> np.ndarray:
    return np.full(len(ids), p, np.float32)

  def _baselines(self) -> dict:
    """Everything that does not depend on the parameters, computed once: the frozen baselines
    (training-source episodes), the oracles re-tuned on test-source episodes at every evaluated
    prior, and the evaluation episodes' ids and grid."""
    off = embeddings.EVAL_ID_OFFSET
    train_ids = np.arange(self._tune_n, dtype=np.int32) + off
    train_ep = self._run_episodes(
      self._train_table,
      self._train_scn,
      train_ids,
      known=self._known(train_ids, self._train_scn.known_fraction),
    )
    reps = -(-self._tune_n // (len(self._n_ids) * len(self._walks)))
    tn, tw = self._grid(reps)
    tune_ids = np.arange(len(tn), dtype=np.int32) + off + _TUNE_OFFSET
    retuned = {}
    for p in (self._test_scn.known_fraction, *self._priors):
      if p not in retuned:  # the same tuning draws at every prior: only the labels move
        ep = self._run_episodes(
          self._test_table, self._test_scn, tune_ids, tn, tw, known=self._known(tune_ids, p)
        )
        retuned[p] = decide.tune(ep, self._knn_k)
    n_id, walks = self._grid(self._per_cell)
    return {
      "frozen": decide.tune(train_ep, self._knn_k),
      "retuned": retuned,
      "ids": np.arange(len(n_id), dtype=np.int32) + off,
      "n_id": n_id,
      "walks": walks,
    }

  # -------------------------------------------------------------------------------------- run
  def run(self, params, rng, step) -> dict[str, float]:
    del rng  # episodes are fixed by the data seed; the model is deterministic
    if self._fixed is None:
      self._fixed = self._baselines()
    f = self._fixed
    p0 = self._test_scn.known_fraction

    def evaluate(p):
      ep = self._run_episodes(
        self._test_table,
        self._test_scn,
        f["ids"],
        f["n_id"],
        f["walks"],
        params,
        with_model=self._model_ok,
        known=self._known(f["ids"], p),
      )
      return ep, decide.decisions(ep, f["frozen"], f["retuned"][p], self._knn_k)

    ep, decided = evaluate(p0)
    out, cells = decide.grid_metrics(decided, ep, self._n_ids, self._walks)
    out.update(
      {
        "nn_threshold": f["frozen"]["nn_tau"],
        "oracle_threshold": f["retuned"][p0]["nn_tau"],
        "set_skipped": float(not self._model_ok),
      }
    )
    priors = []
    for p in self._priors:  # the same episodes, the probe label redrawn at prior p (paired)
      ep_p, decided_p = (ep, decided) if p == p0 else evaluate(p)
      metrics, rows = decide.prior_metrics(decided_p, ep_p, p)
      out.update(metrics)
      priors += rows
    if jax.process_index() == 0 and self._workdir:
      self._save(step, out, cells, priors)
    return out

  def _save(self, step: int, out: dict, cells: list, priors: list) -> None:
    os.makedirs(self._workdir, exist_ok=True)
    stem = os.path.join(self._workdir, f"enroll_{self._tag}_step{step}")
    record = {
      "step": step,
      "tag": self._tag,
      "n_ids": self._n_ids,
      "walks": self._walks,
      "known_fractions": list(self._priors),
      "thresholds": {
        "frozen": self._fixed["frozen"],
        "retuned": {str(p): t for p, t in self._fixed["retuned"].items()},
      },
      "metrics": out,
      "cells": cells,
      "priors": priors,
    }
    with open(stem + ".json", "w") as fh:
      json.dump(record, fh, indent=1)
    title = f"{self._tag} (step {step})"
    row = dict(metrics=out, n_ids=self._n_ids, walks=self._walks, title=title)
    enroll_plot.figure([row], stem + ".png", "scaling")
    if self._priors:
      row = dict(metrics=out, priors=list(self._priors), title=title)
      enroll_plot.figure([row], stem + "_prior.png", "prior")


def pipeline_rows(batch_size: int) -> slice:
  from jaxrepr.data import pipeline

  return pipeline.local_slice(batch_size, jax.process_index(), jax.process_count())
