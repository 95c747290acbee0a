"""Compute budgets (jaxrepr/budget.py): the step count set from examples, FLOPs, seconds or another
config's steps, kept for resumes, and written where summaries read it."""

import json

import jax
import pytest

from jaxrepr import step_cost, train
from jaxrepr.errors import ConfigError, MissingFileError
from tests.core.helpers import REPO, load_config


def small(kind, value):
  config = load_config("classifier", "mlp")
  config.train.update(dict(steps=1000, batch_size=64, log_every=1, checkpoint_every=0))
  config.evals.test.every = 0
  config.num_devices = 1
  config.train.budget.kind, config.train.budget.value = kind, value
  return config


def test_an_examples_budget_sets_the_steps(tmp_path):
  summary = train.train_and_evaluate(small("examples", 600.0), str(tmp_path))
  assert summary["step"] == 10  # ceil(600 / 64)
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["train"]["steps"] == 10 and saved["train"]["budget"]["kind"] == "examples"


def test_a_flops_budget_buys_the_steps_the_compiled_step_costs(tmp_path):
  config = small("flops", 1.0)
  run = train.build(config)
  batch = run.next_batch()
  with jax.set_mesh(run.mesh):
    per_step = step_cost.compiled_flops(
      run.train_step.lower(run.state, batch, run.train_rng).compile()
    )
  assert per_step > 0
  config.train.budget.value = 4.5 * per_step
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["step"] == 4 and summary["budget"]["steps"] == 4
  saved = json.load(open(tmp_path / "run" / "config.json"))
  assert saved["train"]["flops_per_step"] == pytest.approx(per_step)
  assert saved["train"]["total_flops"] == pytest.approx(4 * per_step)
  # replicas: the budget is each replica's, recorded in every replica's run directory
  config.seeds = (0, 1)
  summary = train.train_and_evaluate(config, str(tmp_path / "seeds"))
  assert summary["step"] == 4
  replica = json.load(open(tmp_path / "seeds" / "s1" / "config.json"))
  assert replica["train"]["total_flops"] == pytest.approx(4 * per_step)


def test_a_seconds_budget_is_measured_once_and_kept_for_the_resume(tmp_path, monkeypatch):
  monkeypatch.setattr(step_cost, "step_seconds", lambda config, steps=3: 0.25)
  config = small("seconds", 1.9)
  config.train.checkpoint_every = 3
  train.train_and_evaluate(config, str(tmp_path))
  assert json.load(open(tmp_path / "budget.json"))["steps"] == 7  # floor(1.9 / 0.25)

  def measured_again(config, steps=3):
    raise AssertionError("a resume measured the budget again")

  monkeypatch.setattr(step_cost, "step_seconds", measured_again)
  summary = train.train_and_evaluate(config, str(tmp_path))  # resumes at its final step
  assert summary["step"] == 7


def test_a_steps_of_budget_pays_for_the_flops_of_another_configs_steps(tmp_path, monkeypatch):
  # the reference is the classifier's MLP at its file's defaults (batch 128), this run at batch
  # 64: a fixed cost per example makes 3 reference steps buy 6 steps of this one
  costed = []

  def flops(config):
    costed.append(config)
    return 1e6 * config.train.batch_size

  monkeypatch.setattr(step_cost, "step_flops", flops)
  monkeypatch.chdir(REPO)  # the reference is read from the current directory, as --config's is
  config = small("steps_of", 3.0)
  config.train.checkpoint_every = 2
  config.train.budget.reference = "configs/classifier.py:mlp"
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 6
  assert costed[0].train.batch_size == 128 and costed[0].num_devices == 1  # this run's devices
  saved = json.load(open(tmp_path / "config.json"))["train"]
  assert saved["reference_flops_per_step"] == 128e6 and saved["flops_per_step"] == 64e6
  assert saved["total_flops"] == 6 * 64e6
  assert saved["budget"]["reference"] == "configs/classifier.py:mlp"
  train.train_and_evaluate(config, str(tmp_path))  # the resume: same config, nothing measured
  assert len(costed) == 2 and not list(tmp_path.glob("config.until_step*.json"))
  config.train.budget.reference = "configs/classifier.py"  # another reference in a used workdir
  with pytest.raises(ConfigError, match="--overwrite"):
    train.train_and_evaluate(config, str(tmp_path))


def test_a_bad_steps_of_reference_is_named_in_the_error(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  config = small("steps_of", 3.0)
  config.train.budget.reference = "configs/nope.py"
  with pytest.raises(MissingFileError, match=r"config.train.budget.reference='configs/nope.py'"):
    train.train_and_evaluate(config, str(tmp_path / "a"))
  config.train.budget.reference = "configs/classifier.py:typo"
  with pytest.raises(ConfigError, match=r"reference='configs/classifier.py:typo'.*typo"):
    train.train_and_evaluate(config, str(tmp_path / "b"))


def test_budget_errors_name_the_field(tmp_path):
  with pytest.raises(ConfigError, match="config.train.budget.kind"):
    train.build(small("hours", 1.0))
  with pytest.raises(ConfigError, match="must be > 0"):
    train.build(small("flops", 0.0))
  with pytest.raises(ConfigError, match="config.train.budget.reference"):
    train.build(small("steps_of", 10.0))  # no reference
  with_reference = small("flops", 10.0)
  with_reference.train.budget.reference = "configs/classifier.py"
  with pytest.raises(ConfigError, match="config.train.budget.reference"):
    train.build(with_reference)
  with pytest.raises(ConfigError, match="does not pay for one step"):
    train.train_and_evaluate(small("flops", 10.0), str(tmp_path / "a"))
  train.train_and_evaluate(small("examples", 128.0), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="--overwrite"):  # another budget in a used workdir
    train.train_and_evaluate(small("examples", 256.0), str(tmp_path / "b"))
