"""The enroll evaluator's protocol options: the test-time prior sweep, the re-tuned kNN oracle,
cross-source evaluation in both directions (configs/enroll.py:reverse), and the report of
launch/enroll_report.py."""

import json
import os
import re
import shlex

import jax
import jax.numpy as jnp
import pytest

from jaxrepr import parallel
from jaxrepr.evaluators import enroll as enroll_eval
from tests.core.helpers import REPO, load_config

PRIORS = (10, 30, 50, 70, 90)
METHODS = ("set", "nn", "knn", "oracle", "oracle_knn")


class _Predictor:
  def __init__(self, predict):
    self.predict = predict


_PERFECT = _Predictor(lambda params, ep, rng: {"logit": jnp.where(ep["label"] == 1, 1.0, -1.0)})
_RESULTS: dict = {}


def _evaluate(name: str, workdir: str = "") -> dict:
  """The tiny config's evaluation `name` of a perfect predictor, 128 episodes (cached: the
  evaluations are the same in every test that reads them)."""
  if (name, workdir) not in _RESULTS:
    config = load_config("enroll", "tiny")
    fields = {k: v for k, v in config.evals[name].items() if k not in ("kind", "every")}
    fields.update(episodes_per_cell=32, tune_episodes=256, batch_size=64)
    mesh = parallel.make_mesh(1)
    ev = enroll_eval.Evaluator(config=config, method=_PERFECT, mesh=mesh, workdir=workdir, **fields)
    with jax.set_mesh(mesh):
      _RESULTS[name, workdir] = ev.run(None, jax.random.key(0), 7)
  return _RESULTS[name, workdir]


def test_the_prior_sweep_redraws_the_labels_and_rescores_every_decision():
  out = _evaluate("same")
  for pct in PRIORS:
    # the realised known fraction follows the prior (128 episodes: 3 standard deviations < 0.14)
    assert abs(out[f"realised_known{pct}"] - pct / 100) < 0.14, (pct, out)
    # the model ran on the redrawn episodes: a perfect predictor stays perfect at every prior
    assert out[f"set_accuracy_known{pct}"] == out[f"set_f1_known{pct}"] == 1.0
    for m in METHODS:
      assert 0.0 <= out[f"{m}_accuracy_known{pct}"] <= 1.0
  # the sweep's draws are paired with the main evaluation: at the training prior they are the same
  for m in METHODS:
    assert out[f"{m}_accuracy_known50"] == out[f"{m}_accuracy"]
    assert out[f"{m}_f1_known50"] == out[f"{m}_f1"]


@pytest.mark.parametrize("name", ["same", "shifted"])
def test_the_oracles_are_retuned_at_each_prior(name):
  """Re-tuned on labelled episodes of the test distribution, an oracle does at least about as well
  as answering the majority class (a threshold kept from prior 0.5 does not, at 0.1 and 0.9)."""
  out = _evaluate(name)
  for m in ("oracle", "oracle_knn"):
    for pct in (10, 90):
      r = out[f"realised_known{pct}"]
      assert out[f"{m}_accuracy_known{pct}"] >= max(r, 1 - r) - 0.05, (m, pct, out)


def test_the_knn_oracle_is_retuned_on_the_test_source():
  """On the shifted source (another dimension and concentration) the vote frozen on training
  episodes loses accuracy that the vote re-tuned on the test source keeps."""
  out = _evaluate("shifted")
  assert out["oracle_knn_accuracy"] >= out["knn_accuracy"] + 0.1, out
  assert out["oracle_knn_auc"] >= 0.9


def test_the_evaluator_writes_every_prior_and_method_to_its_json(tmp_path):
  out = _evaluate("same", str(tmp_path))
  with open(tmp_path / "enroll_same_step7.json") as f:
    record = json.load(f)
  assert record["known_fractions"] == [0.1, 0.3, 0.5, 0.7, 0.9]
  assert len(record["priors"]) == len(PRIORS) * len(METHODS)
  for row in record["priors"]:
    tag = f"known{round(100 * row['known_fraction'])}"
    assert row["accuracy"] == out[f"{row['method']}_accuracy_{tag}"]
    assert row["f1"] == out[f"{row['method']}_f1_{tag}"]
  assert set(record["thresholds"]["retuned"]) == {"0.1", "0.3", "0.5", "0.7", "0.9"}
  assert os.path.getsize(tmp_path / "enroll_same_step7_prior.png") > 1000


def test_known_fractions_outside_zero_one_are_a_config_error():
  config = load_config("enroll", "tiny")
  fields = {k: v for k, v in config.evals.same.items() if k not in ("kind", "every")}
  with pytest.raises(ValueError, match="known_fractions"):
    enroll_eval.Evaluator(
      config=config,
      method=_PERFECT,
      mesh=parallel.make_mesh(1),
      workdir="",
      **dict(fields, known_fractions=(0.5, 1.0)),
    )


def _without_split(spec) -> dict:
  return {k: v for k, v in spec.items() if k != "split"}


@pytest.mark.parametrize("tiny", ["", ",tiny"])
def test_reverse_trains_on_the_other_source_and_tests_on_the_first(tiny, monkeypatch):
  """Parsed as launch/train.py parses it: `reverse` swaps the training source and the cross-source
  evaluation of the default, so the transfer is measured in both directions."""
  from tests.core.test_documented_commands import _parse

  monkeypatch.chdir(REPO)
  fwd = _parse("train", [f"--config=configs/enroll.py{':' + tiny[1:] if tiny else ''}"])
  rev = _parse("train", [f"--config=configs/enroll.py:reverse{tiny}"])
  assert _without_split(rev.data.source) == _without_split(fwd.evals.shifted.source)
  assert _without_split(rev.evals.shifted.source) == _without_split(fwd.data.source)
  assert fwd.data.source.dim != rev.data.source.dim
  for c in (fwd, rev):
    assert (c.data.source.split, c.evals.same.source.split, c.evals.shifted.source.split) == (
      "train",
      "test",
      "all",
    )
    assert _without_split(c.evals.same.source) == _without_split(c.data.source)
  # nothing else moves: the model, the episodes and the evaluation grids are the default's
  for field in ("model", "train", "optim"):
    assert rev[field] == fwd[field]
  assert {k: v for k, v in rev.data.items() if k != "source"} == {
    k: v for k, v in fwd.data.items() if k != "source"
  }


def _fake_run(workdir, config, metrics: dict, tag: str, step: int = 3):
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(config.to_json())
  record = {
    "step": step,
    "n_ids": [2, 4],
    "walks": [1, 3],
    "known_fractions": [0.1, 0.9],
    "metrics": metrics,
  }
  (workdir / f"enroll_{tag}_step{step}.json").write_text(json.dumps(record))
  (workdir / f"enroll_{tag}_step{step - 1}.json").write_text(json.dumps(dict(record, step=1)))


def test_the_report_tabulates_the_newest_evaluator_json_of_each_run(tmp_path):
  from launch import _enroll_report as enroll_report

  metrics = {}
  for i, m in enumerate(METHODS):
    metrics[f"{m}_accuracy"] = 0.5 + 0.01 * i
    if m != "oracle":  # it shares nn's ranking: no AUC of its own
      metrics[f"{m}_auc"] = 0.6 + 0.01 * i
    metrics.update(
      {f"{m}_acc_nid{n}": 0.7 for n in (2, 4)} | {f"{m}_acc_w{w}": 0.7 for w in (1, 3)}
    )
    for pct in (10, 90):
      metrics.update({f"{m}_accuracy_known{pct}": 0.1 * i + pct / 1000})
      metrics.update({f"{m}_f1_known{pct}": 0.2 + 0.01 * i + pct / 1000})
  _fake_run(tmp_path / "fwd", load_config("enroll", "tiny"), metrics, "shifted")
  _fake_run(tmp_path / "rev", load_config("enroll", "reverse,tiny"), metrics, "shifted")
  text = enroll_report.report(
    [str(tmp_path / "fwd"), str(tmp_path / "rev")], str(tmp_path / "fig" / "enroll")
  )
  lines = text.splitlines()
  assert lines[0] == "Accuracy (ROC-AUC):"
  fwd = next(x for x in lines if x.startswith("| fwd | train vmf d=8 seed 0 -> test"))
  assert "test vmf d=5 seed 1 | 3 |" in fwd  # the newest step's file
  assert "| 0.500 (0.600) | 0.510 (0.610) | 0.520 (0.620) | 0.530 | 0.540 (0.640) |" in fwd
  rev = next(x for x in lines if x.startswith("| rev | train vmf d=5 seed 1 -> test"))
  assert "-> test vmf d=8 seed 0 | 3 |" in rev
  prior = [x for x in lines if x.startswith("| fwd |") and "| 0.9 |" in x]
  assert prior and "| 0.090 / 0.290 | 0.190 / 0.300 |" in prior[0]
  for fig in ("scaling", "prior"):
    assert os.path.getsize(tmp_path / "fig" / f"enroll_{fig}.png") > 1000


def test_the_report_command_prints_the_tables_and_names_a_missing_run(tmp_path):
  """launch/enroll_report.py as docs/enroll.md states it (flags --runs and --out)."""
  import subprocess
  import sys

  metrics = {f"{m}_accuracy": 0.5 for m in METHODS}
  metrics.update({f"{m}_acc_nid{n}": 0.7 for m in METHODS for n in (2, 4)})
  metrics.update({f"{m}_acc_w{w}": 0.7 for m in METHODS for w in (1, 3)})
  metrics.update(
    {f"{m}_{k}_known{p}": 0.4 for m in METHODS for k in ("accuracy", "f1") for p in (10, 90)}
  )
  _fake_run(tmp_path / "enroll", load_config("enroll", "tiny"), metrics, "same")
  script = os.path.join(REPO, "launch", "enroll_report.py")
  cmd = [
    sys.executable,
    script,
    f"--runs={tmp_path / 'enroll'}",
    f"--out={tmp_path / 'docs' / 'e'}",
  ]
  res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert (
    "| enroll | train vmf d=8 seed 0 -> test vmf d=8 seed 0 (held-out ids) | 3 | 0.500"
    in res.stdout
  )
  assert re.fullmatch(r"commit `([0-9a-f]{7,40}\+?|\?)`", res.stdout.splitlines()[0])
  assert (tmp_path / "docs" / "e_scaling.png").exists() and (
    tmp_path / "docs" / "e_prior.png"
  ).exists()
  # Into a docs block, with the command that writes the same block again.
  from launch import _doc_tables

  page = tmp_path / "enroll.md"
  page.write_text("# Enroll\n<!-- report:start -->\npasted\n<!-- report:end -->\nafter\n")
  res = subprocess.run(
    [*cmd, f"--into={page}", "--marker=report"], capture_output=True, text=True, timeout=120
  )
  assert res.returncode == 0, res.stderr[-2000:]
  written = page.read_text()
  body = _doc_tables.blocks(written)["report"]
  assert "pasted" not in body and written.endswith("<!-- report:end -->\nafter\n")
  assert "| enroll | train vmf d=8 seed 0 -> test vmf d=8 seed 0 (held-out ids) | 3 |" in body
  (stated,) = [x for x in body.splitlines() if x.startswith("    python launch/enroll_report.py")]
  # the stated command writes this block again (rerun on the docs' own block by test_kept_tables)
  assert shlex.split(stated)[2:] == [*cmd[2:], f"--into={page}", "--marker=report"]
  res = subprocess.run(cmd[:2] + [f"--runs={tmp_path / 'nothing'}"], capture_output=True, text=True)
  assert res.returncode == 1
  assert (
    res.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nothing'}/config.json")
  )


@pytest.mark.heavy
def test_reverse_tiny_trains_and_evaluates_both_sources(tmp_path):
  from tests.methods.enroll.test_enroll_config import _train_tiny

  config = load_config("enroll", "reverse,tiny")
  config.num_devices = 1
  results = _train_tiny(config, tmp_path)
  assert results["shifted/set_skipped"] == 0.0  # the 5-d model ran on the 8-d source unchanged
