"""The canonical trainer, in process: device-count invariance, config errors, NaN guard,
checkpoint fallback, outputs."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from jaxrepr import checkpoint, train
from tests.core.helpers import load_config


def small_config(**train_overrides):
  config = load_config("classifier", "mlp")
  config.train.update(dict(steps=20, batch_size=64, log_every=1, checkpoint_every=10))
  config.train.update(train_overrides)
  config.evals.test.every = 0
  return config


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def final_params(config, workdir):
  run = train.build(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), 3)
  step, state, _ = ckpt.restore_latest(checkpoint.abstract_like(run.state))
  return step, jax.tree.map(np.asarray, state.params)


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  assert jax.device_count() == 8
  out = {}
  for n in (1, 8):
    config = small_config()
    config.num_devices = n
    train.train_and_evaluate(config, str(tmp_path / str(n)))
    out[n] = losses(tmp_path / str(n))
  assert sorted(out[1]) == list(range(1, 21))
  np.testing.assert_allclose(
    [out[8][s] for s in range(1, 21)], [out[1][s] for s in range(1, 21)], rtol=2e-5
  )
  p1 = final_params(small_config(), tmp_path / "1")[1]
  p8 = final_params(small_config(), tmp_path / "8")[1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p8)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
  out = {}
  for accum in (1, 4):
    config = small_config(steps=5, grad_accum=accum)
    config.model.dropout = 0.0
    train.train_and_evaluate(config, str(tmp_path / str(accum)))
    out[accum] = final_params(config, tmp_path / str(accum))[1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), out[1], out[4])


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("optim.lr", -0.1, r"config.optim.lr=-0.1: must be > 0"),
    ("method", "nope", r"config.method='nope' is not a module of jaxrepr.methods"),
    ("data.name", "nope", r"config.data.name='nope'"),
    ("train.grad_accum", 3, r"config.train.grad_accum=3: must divide train.batch_size=64"),
    ("optim.name", "lion", r"config.optim.name='lion'"),
    ("profile_steps", -1, r"config.profile_steps=-1: must be >= 0"),
    ("optim.decay_at", (300, 200), r"config.optim.decay_at=\(300, 200\): must be strictly"),
    ("cpu_devices", 0, r"config.cpu_devices=0: must be >= 1"),
  ],
)
def test_bad_values_are_refused_naming_the_field(tmp_path, field, value, message):
  config = small_config()
  section, _, key = field.rpartition(".")
  (config[section] if section else config)[key] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()  # stopped before building anything


def test_step_schedule_multiplies_the_lr_at_each_boundary():
  from jaxrepr import optim

  cfg = optim.default_config()
  cfg.update(schedule="step", lr=1e-3, decay_at=(10, 20), decay_factor=0.5)
  lr = optim.schedule(cfg, total_steps=30)
  np.testing.assert_allclose(
    [lr(s) for s in (0, 9, 10, 19, 20, 29)], [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rtol=1e-6
  )


def test_final_evaluation_runs_without_the_sigterm_guard(tmp_path, monkeypatch):
  # A long final evaluation must not swallow a preemption's SIGTERM: the final checkpoint is on
  # disk and the default handler is back, so the signal ends the process and a rerun evaluates.
  seen = {}
  real = train._run_evals

  def spy(evaluators, config, run, step, writer, final):
    seen[final] = signal.getsignal(signal.SIGTERM)
    return real(evaluators, config, run, step, writer, final)

  monkeypatch.setattr(train, "_run_evals", spy)
  config = small_config(steps=4)
  config.evals.test.every = 2
  before = signal.getsignal(signal.SIGTERM)
  train.train_and_evaluate(config, str(tmp_path))
  assert seen[False] is not before  # intermediate evaluations: the guard records SIGTERM
  assert seen[True] is before  # final evaluation: the process's own handler
  assert 4 in checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 3).all_steps()


def test_stages_on_a_method_without_a_multi_stage_runner_are_refused(tmp_path):
  config = small_config(steps=2)
  config.stages = {"kind": "compress"}
  with pytest.raises(ValueError, match="no multi-stage runner"):
    train.run_experiment(config, str(tmp_path))
  config.method = "clasifier"
  with pytest.raises(ValueError, match="config.method='clasifier' is not a module"):
    train.run_experiment(config, str(tmp_path))


def test_batch_that_does_not_divide_by_the_devices_is_refused(tmp_path):
  config = small_config(batch_size=60)
  with pytest.raises(ValueError, match="does not divide by the 8 devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_non_finite_loss_stops_the_run_naming_step_and_metric(tmp_path):
  config = small_config(steps=50)
  config.optim.update(name="sgd", lr=1e12, schedule="constant", clip_norm=0.0, b1=0.0)
  config.profile_start, config.profile_steps = 0, 1000  # the trace is open when the run stops
  with pytest.raises(FloatingPointError, match=r"non-finite \w+=\S+ at step \d+"):
    train.train_and_evaluate(config, str(tmp_path))
  jax.profiler.start_trace(str(tmp_path / "again"))  # raises if the run left its trace running
  jax.profiler.stop_trace()


def test_corrupted_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, capsys):
  config = small_config()
  train.train_and_evaluate(config, str(tmp_path))
  latest = tmp_path / "checkpoints" / "20"
  for root, _, files in os.walk(latest / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  capsys.readouterr()
  summary = train.train_and_evaluate(small_config(steps=25), str(tmp_path))
  out = capsys.readouterr()
  assert str(latest) in out.err and "could not be restored" in out.err
  assert out.out.splitlines()[0].startswith("resuming from step 10")
  assert summary["step"] == 25


def test_outputs_are_written_and_readable(tmp_path):
  config = small_config()
  config.evals.test.every = 10
  train.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert {"train/loss", "train/grad_norm", "train/lr"} <= set(rows[0])
  assert any("test/accuracy" in r for r in rows)
  assert json.load(open(tmp_path / "config.json"))["method"] == "classifier"
  events = [f for f in os.listdir(tmp_path / "tensorboard") if "tfevents" in f]
  tags = read_tensorboard_tags(tmp_path / "tensorboard" / events[0])
  assert {"train/loss", "test/accuracy"} <= tags


def read_tensorboard_tags(path):
  """Parses TFRecord framing (u64 length, u32 crc, data, u32 crc) and the Event protos."""
  from tensorboardX.proto import event_pb2

  tags = set()
  data = open(path, "rb").read()
  pos = 0
  while pos < len(data):
    length = int.from_bytes(data[pos : pos + 8], "little")
    event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
    tags.update(v.tag for v in event.summary.value)
    pos += 12 + length + 4
  return tags


def test_profile_steps_write_a_trace_of_those_steps(tmp_path, capsys):
  config = small_config(steps=8)
  config.profile_start, config.profile_steps = 3, 2
  train.train_and_evaluate(config, str(tmp_path))
  assert "profile of steps 3-4 written to" in capsys.readouterr().out
  traces = [
    os.path.join(root, f)
    for root, _, files in os.walk(tmp_path / "tensorboard" / "plugins")
    for f in files
  ]
  assert any(t.endswith(".xplane.pb") for t in traces)
  assert any(t.endswith("perfetto_trace.json.gz") for t in traces)
  pd = jax.profiler.ProfileData.from_file(next(t for t in traces if t.endswith(".xplane.pb")))
  names = {e.name for plane in pd.planes for line in plane.lines for e in line.events}
  assert any("train_step" in n for n in names)  # the jitted step ran inside the trace
