"""Every config file's default (no variant) runs end to end from a fresh clone: data from the
installed packages only, its method, its evaluators and, for multi-stage configs, every stage.

Each default goes through `train.run_experiment`, what launch/train.py calls, for two steps with its
evaluators cut to their smallest sizes; models keep their architecture, with fewer or narrower
layers where compiling the full one would dominate the test (noted in OVERRIDES). Overrides
are set on the locked config, so a name here that the config does not declare fails like a
command-line override would. A config whose prerequisites are missing (another run, a data
directory) must stop with MissingFileError before its first training step.

Data blocks: every image config takes `config.data` from `jaxrepr.data.images.default_config()`,
which holds every field the module reads (the module has no fallback defaults of its own), so
`base_config()` plus those defaults is a complete config and a misspelt data field is an error.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from jaxrepr import config as config_lib, train
from jaxrepr.data import images
from jaxrepr.errors import MissingFileError
from jaxrepr.methods import classifier
from tests.core.helpers import REPO, load_config

_TINY_EVAL = dict(n_ids=(2, 4), walks=(1, 2), episodes_per_cell=1, tune_episodes=4, batch_size=8)
# NoProp's ten Figure 6 blocks (20M parameters, unrolled) would dominate this file: the same
# blocks, narrow and two of them (the sizes of the configs' own `tiny` variant).
_NOPROP = {
  "train.batch_size": 8,
  "model.conv_features": (4, 4, 4),
  "model.hidden": 8,
  "model.head_hidden": 8,
  "model.num_blocks": 2,
}
_ODE = {"model.inference_steps": 2, "model.gamma_hidden": 8, "model.time_dim": 8}

# Per config file: the overrides of its default that make it tiny.
OVERRIDES = {
  "classifier": {"train.batch_size": 8},
  "contrastive_strips": {
    "train.batch_size": 8,
    "evals.test.batch_size": 8,
    "evals.test.max_rows": 16,
    "evals.probe.batch_size": 8,
    "evals.probe.steps": 2,
    "evals.probe.max_train": 32,
  },
  "contrastive_xor": {"train.batch_size": 8, "evals.test.batch_size": 8, "data.test_size": 16},
  # two stages warm-started one from the other, instead of four
  "distill": {"train.batch_size": 8, "stages.teacher_steps": 2, "stages.num_stages": 2},
  "enroll": {
    "train.batch_size": 8,
    "data.n_id_range": (2, 6),
    "data.walks_range": (1, 3),
    "model.num_blocks": 1,
    **{f"evals.{e}.{k}": v for e in ("same", "shifted") for k, v in _TINY_EVAL.items()},
  },
  # one layer each instead of two: compiling the Grad 1 step and the searches took ~45 s for
  # the two-layer model, ~27 s for this one (2-core CPU shared with other jobs)
  "lpn": {
    "train.batch_size": 8,
    "data.eval_num_tasks": 8,
    "evals.test.batch_size": 8,
    "evals.test.searches.grad20.steps": 1,
    "evals.seen.batch_size": 8,
    "evals.seen.searches.grad20.steps": 1,
    "evals.budget.batch_size": 8,
    "evals.budget.budgets": (4,),
    "evals.budget.budget_modes": ("gradient_ascent",),
    "model.encoder.num_layers": 1,
    "model.decoder.num_layers": 1,
  },
  "noprop": _NOPROP,
  "noprop_dt": _NOPROP,
  "noprop_ct": {**_NOPROP, **_ODE},
  "noprop_fm": {**_NOPROP, **_ODE},
  # two set-length buckets instead of four: the same bucketed step with fewer branches to compile
  "set_clustering": {
    "train.batch_size": 2,
    "model.length_buckets": 2,
    "evals.test.num_batches": 1,
    "evals.test.batch_size": 2,
  },
  "set_max": {"train.batch_size": 8, "evals.test.num_batches": 1, "evals.test.batch_size": 8},
}
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
# A default equal to an earlier file's (configs/noprop_dt.py is configs/noprop.py's) runs once.
_SEEN: dict[str, str] = {}
TWINS = {
  name: _SEEN.setdefault(load_config(name).to_json(sort_keys=True), name) for name in CONFIGS
}
DISTINCT = [name for name in CONFIGS if TWINS[name] == name]


def _set(config, overrides: dict) -> None:
  """`config.a.b = v` for every 'a.b': v, on the locked config (an unknown field is an error)."""
  config.lock()
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value


def _tiny(name: str, arg: str | None = None):
  config = load_config(name, arg)
  _set(
    config,
    {
      "num_devices": 1,
      "train.steps": 2,
      "train.log_every": 1,
      "train.checkpoint_every": 0,
      **OVERRIDES[name],
    },
  )
  return config


def _rows(workdir) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_every_config_file_is_covered():
  assert sorted(OVERRIDES) == CONFIGS
  for name, twin in TWINS.items():  # a twin runs as its original, so it needs the same overrides
    assert OVERRIDES[name] == OVERRIDES[twin], name
  assert len(DISTINCT) >= len(CONFIGS) - 1, TWINS


@pytest.mark.parametrize("name", DISTINCT)
def test_default_runs_with_its_evaluators(name, tmp_path):
  config = _tiny(name)
  train.run_experiment(config, str(tmp_path))
  # One trainer run, or one per stage (distillation): each trained and evaluated.
  runs = sorted(
    os.path.dirname(p) for p in glob.glob(str(tmp_path / "**" / "metrics.jsonl"), recursive=True)
  )
  assert runs, f"{name}: nothing was trained"
  for run in runs:
    rows = _rows(run)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses and all(math.isfinite(v) for v in losses), (run, rows)
    evals = {k: v for r in rows for k, v in r.items() if k != "step" and not k.startswith("train/")}
    assert evals, f"{run}: no evaluator ran"
    assert all(np.isfinite(v) for v in evals.values() if isinstance(v, float)), evals


def _assert_stops_before_training(config, workdir, match: str):
  with pytest.raises(MissingFileError, match=match) as e:
    train.run_experiment(config, str(workdir))
  assert "\n" not in str(e.value)  # printed as one line by the launchers
  assert not [r for r in _rows(workdir) if any(k.startswith("train/") for k in r)]
  return str(e.value)


def test_enroll_real_without_a_classifier_run_stops_before_training(tmp_path):
  config = _tiny("enroll", "real")
  encoder = tmp_path / "no_classifier_here"
  _set(
    config,
    {
      "evals.real.source.workdir": str(encoder),
      **{f"evals.real.{k}": v for k, v in _TINY_EVAL.items()},
    },
  )
  message = _assert_stops_before_training(config, tmp_path / "run", "no classifier embeddings")
  assert (
    f"`python launch/train.py --config=configs/classifier.py:fashion_mnist --workdir={encoder}`"
    in message
  )
  encoder.mkdir()
  (encoder / "config.json").write_text("{}")  # started, but no checkpoint yet
  message = _assert_stops_before_training(config, tmp_path / "run2", "no classifier embeddings")
  assert "launch/train.py --config=configs/classifier.py:fashion_mnist" in message
  (encoder / "checkpoints" / "1000").mkdir(parents=True)  # trained before the embeddings existed
  message = _assert_stops_before_training(config, tmp_path / "run3", "no classifier embeddings")
  assert (
    f"`python launch/eval.py --config=configs/classifier.py:fashion_mnist --workdir={encoder} "
    "--evals=embeddings`"
  ) in message


def test_a_data_dir_without_the_files_stops_before_training(tmp_path):
  """config.data.data_dir is honoured: Fashion-MNIST read from an empty directory is reported."""
  config = _tiny("classifier", "fashion_mnist")
  _set(config, {"data.data_dir": str(tmp_path)})
  message = _assert_stops_before_training(config, tmp_path / "run", "IDX file not found")
  assert message.startswith(str(tmp_path))


def test_distill_with_a_missing_teacher_stops_before_training(tmp_path):
  config = _tiny("distill")
  _set(config, {"stages.teacher_workdir": str(tmp_path / "no_teacher")})
  message = _assert_stops_before_training(config, tmp_path / "run", "names no finished run")
  assert "--config=configs/distill.py:multistage" in message
  assert not glob.glob(str(tmp_path / "run" / "**" / "metrics.jsonl"), recursive=True)


# ------------------------------------------------------------------------------------ data blocks
def _configs_and_variants():
  """(name, arg, config) for every config file's default and each of its declared variants."""
  for name in CONFIGS:
    spec = importlib.util.spec_from_file_location(
      f"defaults_test_{name}", os.path.join(REPO, "configs", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in (None, *getattr(module, "VARIANTS", ())):
      yield name, arg, load_config(name, arg)


def test_image_configs_take_their_data_block_from_the_images_defaults():
  fields = set(images.default_config())
  seen = set()
  for name, arg, config in _configs_and_variants():
    if config.data.name == "images":
      assert set(config.data) == fields, (name, arg, sorted(set(config.data) ^ fields))
      seen.add(name)
  assert {"classifier", "noprop", "distill"} <= seen, seen


def test_base_config_and_the_images_defaults_make_a_complete_config():
  config = config_lib.base_config()
  config.method = "classifier"
  config.data = images.default_config()
  config.model = classifier.default_model_config()
  config_lib.validate(config)
  arrays = images.load(config.data, "test")
  assert arrays["image"].shape[1:] == (8, 8, 1) and len(arrays["label"]) == len(arrays["image"])
  batch = next(images.train_iterator(config.data, batch_size=8, seed=0))
  assert batch["image"].shape == (8, 8, 8, 1)


@pytest.mark.parametrize("field", sorted(set(images.default_config()) - {"name"}))
def test_images_reads_each_data_field_without_a_fallback(field):
  """Without the field, the data does not load: no default hides in jaxrepr/data/images.py."""
  cfg = images.default_config("digits")
  cfg.update(dict(normalize="standard", augment="crop_flip"))  # the paths that read every field
  next(images.train_iterator(cfg, batch_size=8, seed=0))
  del cfg[field]
  with pytest.raises((AttributeError, KeyError), match=field):
    next(images.train_iterator(cfg, batch_size=8, seed=0))


@pytest.mark.parametrize("name", CONFIGS)
def test_a_misspelt_data_field_is_an_error(name):
  config = load_config(name)
  field = sorted(config.data)[0]
  # _set writes into the locked config, as launch/train.py applies a --config.data.<field> override
  with pytest.raises(KeyError, match=f"{field}x.*cannot be added"):
    _set(config, {f"data.{field}x": config.data[field]})
