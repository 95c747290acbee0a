"""configs/enroll.py trains through the canonical trainer with its evaluators (tiny variant; with
`real`, the third one on a classifier's features), the evaluator writes its PNG and JSON, and its
arithmetic holds on a known predictor."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import config as config_lib, parallel, train
from jaxrepr.data import embeddings
from jaxrepr.evaluators import enroll as enroll_eval
from jaxrepr.methods import enroll
from tests.core.helpers import load_config


def _classifier(workdir):
  """A 2-step digits CNN that writes its features at the end, as configs/classifier.py:fashion_mnist
  does (the walks that enroll.py:real,tiny reads: 20 images, 4 views)."""
  config = load_config("classifier", "tiny")
  config.num_devices = 1
  config.train.update(dict(steps=2, checkpoint_every=0, log_every=1))
  config.evals.test.every = 0
  config.evals.embeddings = dict(
    load_config("classifier", "fashion_mnist").evals.embeddings, num_images=20, views=4
  )
  train.train_and_evaluate(config, str(workdir))
  return str(workdir)


def _train_tiny(config, work):
  summary = train.train_and_evaluate(config, str(work))
  assert summary["step"] == config.train.steps
  results = summary["eval"]
  tags = [name for name in config.evals]
  for tag in tags:
    assert os.path.getsize(work / f"enroll_{tag}_step2.png") > 1000
    with open(work / f"enroll_{tag}_step2.json") as f:
      cells = json.load(f)["cells"]
    assert {c["method"] for c in cells} == {"set", "nn", "knn", "oracle", "oracle_knn"}
    assert sum(c["episodes"] for c in cells if c["method"] == "set") == 16  # 4 cells x 4
    assert os.path.getsize(work / f"enroll_{tag}_step2_prior.png") > 1000
    for method in ("set", "nn", "knn", "oracle", "oracle_knn"):
      assert 0.0 <= results[f"{tag}/{method}_accuracy"] <= 1.0
      assert math.isfinite(results[f"{tag}/{method}_f1"])
    # the model was trained on 8-d embeddings and ran unchanged on the 5-d source (and on the
    # real source's 128-d CNN features)
    assert results[f"{tag}/set_skipped"] == 0.0
  return results


@pytest.mark.heavy  # CI: test_config_defaults trains the config; test_enroll_eval checks the files
def test_tiny_config_trains_and_writes_the_plots(tmp_path):
  config = load_config("enroll", "tiny")
  config.num_devices = 1
  _train_tiny(config, tmp_path)


@pytest.mark.heavy
def test_tiny_config_with_a_real_image_encoder(tmp_path):
  config = load_config("enroll", "tiny,real")
  config.num_devices = 1
  config.evals.real.source.workdir = _classifier(tmp_path / "encoder")
  _train_tiny(config, tmp_path / "enroll")


class _FixedPredictor:
  def __init__(self, predict):
    self.predict = predict


def test_evaluator_scores_a_perfect_predictor_and_skips_raw_models_across_dims():
  config = load_config("enroll", "tiny")
  mesh = parallel.make_mesh(1)
  perfect = _FixedPredictor(
    lambda params, ep, rng: {"logit": jnp.where(ep["label"] == 1, 1.0, -1.0)}
  )
  fields = {k: v for k, v in config.evals.same.items() if k not in ("kind", "every")}
  ev = enroll_eval.Evaluator(config=config, method=perfect, mesh=mesh, workdir="", **fields)
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  assert out["set_accuracy"] == out["set_f1"] == out["set_auc"] == 1.0
  assert out["set_eer"] == 0.0
  assert all(out[f"set_acc_{b}"] == 1.0 for b in ("nid2", "nid4", "w1", "w3"))
  # equal-sized buckets: the overall accuracy is their mean
  np.testing.assert_allclose(out["nn_accuracy"], (out["nn_acc_nid2"] + out["nn_acc_nid4"]) / 2)
  raw = load_config("enroll", "tiny,raw")
  fields = {k: v for k, v in raw.evals.shifted.items() if k not in ("kind", "every")}
  ev = enroll_eval.Evaluator(config=raw, method=perfect, mesh=mesh, workdir="", **fields)
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  assert out["set_skipped"] == 1.0 and "set_accuracy" not in out and "nn_accuracy" in out
  with pytest.raises(ValueError, match="more than that many"):
    enroll_eval.Evaluator(
      config=config, method=perfect, mesh=mesh, workdir="", **dict(fields, n_ids=(2, 30))
    )


def test_an_npz_source_set_by_overrides_trains_and_moves_evaluation_a_with_it(tmp_path):
  """The documented `--config.data.source.kind=npz --config.data.source.path=...`: the method
  trains on the file's training identities and `same` tests on its held-out ones."""
  rng = np.random.default_rng(0)
  path = str(tmp_path / "emb.npz")
  np.savez(path, embeddings=rng.standard_normal((240, 5)), labels=np.repeat(np.arange(40), 6))
  config = load_config("enroll", "tiny")
  config.lock()  # as on the command line: only declared fields can be set
  config.data.source.kind = "npz"
  config.data.source.path = path
  assert (config.evals.same.source.kind, config.evals.same.source.path) == ("npz", path)
  assert config.evals.shifted.source.kind == "vmf"  # (b) stays the synthetic source
  config_lib.validate(config)
  method = enroll.build(config)
  assert "training source npz with 30 identities, d=5" in method.param_count_note
  train_ids = set(embeddings.make_source(config.data.source)["labels"])
  test_ids = set(embeddings.make_source(config.evals.same.source)["labels"])
  assert len(test_ids) == 10 and not train_ids & test_ids
  missing = load_config("enroll", "tiny")
  missing.data.source.kind = "npz"
  with pytest.raises(ValueError, match="config.data.source.path must be set"):
    enroll.validate(missing)


def test_config_variants_validate():
  for arg in ("", "reverse", "extra", "raw", "absolute", "scaled", "isab", "real", "tiny"):
    config = load_config("enroll", arg)
    config_lib.validate(config)
  default = load_config("enroll")
  assert default.evals.same.source.split == "test" and default.data.source.split == "train"
  assert default.evals.shifted.source.dim != default.data.source.dim
  # the default needs nothing but the installed packages; (c) is the `real` variant
  assert "real" not in default.evals
  assert load_config("enroll", "real").evals.real.source.kind == "encoder"
  with pytest.raises(ValueError, match="unknown variants"):
    load_config("enroll", "huge")


@pytest.mark.parametrize(
  "override",
  [
    "--config.data.source.split_seed=1",
    "--config.data.source.test_fraction=0.1",
    "--config.data.source.seed=3",
  ],
)
def test_same_source_evaluation_follows_training_source_overrides(override, monkeypatch):
  """Parsed as launch/train.py parses its command line: evaluation (a) is the training source (every
  field but the split) and sees none of its training identities."""
  from tests.core.test_documented_commands import _parse

  monkeypatch.chdir(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  )
  config = _parse("train", ["--config=configs/enroll.py:tiny", override])
  train_spec, same = config.data.source, config.evals.same.source
  assert all(same[k] == train_spec[k] for k in train_spec if k != "split")
  assert (same.split, train_spec.split) == ("test", "train")
  held_out = np.unique(embeddings.make_source(same)["labels"])
  seen = np.unique(embeddings.make_source(train_spec)["labels"])
  assert held_out.size > 0 and seen.size > 0 and np.intersect1d(held_out, seen).size == 0


def test_an_evaluation_that_would_see_training_identities_stops_naming_both_counts(tmp_path):
  """(Overriding a field of evals.same.source that refers to the training source's, e.g. its
  split_seed, sets the training source's too: ml_collections assigns through the reference.)"""
  import subprocess

  from tests.core.helpers import train_cmd

  repo = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  )
  res = subprocess.run(
    train_cmd(
      os.path.join(repo, "configs", "enroll.py") + ":tiny",
      str(tmp_path),
      "--config.evals.same.source.split=all",
    ),
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"),
  )
  assert res.returncode == 1, res.stderr[-3000:]
  line = res.stderr.strip().splitlines()[-1]
  assert line.startswith("error: config.evals.<name>.source is the training source, but ")
  assert "30 of its 40 held-out identities are among the 30 training identities" in line
  assert not os.path.exists(tmp_path / "metrics.jsonl")
