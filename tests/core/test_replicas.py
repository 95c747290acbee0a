"""Seeds and sweeps as one program (jaxrepr/replicas.py): each replica equals the single run of its
seed and point, resumes exactly, and writes a run directory of its own."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import checkpoint, optim, replicas, train
from jaxrepr.errors import ConfigError
from tests.core.helpers import load_config


def classifier(**train_overrides):
  config = load_config("classifier", "mlp")
  config.train.update(dict(steps=20, batch_size=64, log_every=5, checkpoint_every=10))
  config.train.update(train_overrides)
  config.evals.test.every = 10
  config.num_devices = 1  # the mesh test below uses eight
  return config


def set_max():
  config = load_config("set_max", "tiny")
  config.train.update(dict(steps=12, log_every=4, checkpoint_every=0))
  for ev in config.evals.values():
    ev.every = 0
  config.num_devices = 1
  return config


def rows(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def logged(run_dir):
  """{(step, metric): value} of the losses and evaluations a run logged."""
  return {
    (r["step"], k): v
    for r in rows(run_dir)
    for k, v in r.items()
    if k == "train/loss" or (not k.startswith("train/") and k != "step")
  }


def final_params(config, workdir, index=None):
  run = train.build(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), 3, read_only=True)
  step, state, data_state = ckpt.restore_latest(checkpoint.abstract_like(run.state))
  params = state.params if index is None else jax.tree.map(lambda x: x[index], state.params)
  return step, jax.tree.map(np.asarray, params), data_state


def assert_same_run(replica_dir, single_dir, rtol=1e-5):
  got, want = logged(replica_dir), logged(single_dir)
  assert sorted(got) == sorted(want) and len(want) >= 3
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-6, err_msg=str(key))


# set_max (heavy): its data is generated on device from a seed the batch carries, which the cheap
# test_methods_that_generate_data_on_device_take_each_replicas_seed_from_its_batch checks in CI.
@pytest.mark.parametrize(
  "make",
  [classifier, pytest.param(set_max, marks=pytest.mark.heavy)],
  ids=["classifier", "set_max"],
)
def test_each_replica_equals_the_single_run_of_its_seed(tmp_path, make):
  config = make()
  config.seeds = (0, 1, 2) if make is classifier else (1, 2)
  summary = train.train_and_evaluate(config, str(tmp_path / "multi"))
  assert sorted(summary["replicas"]) == [f"s{s}" for s in config.seeds]
  for seed in config.seeds:
    with open(tmp_path / "multi" / f"s{seed}" / "config.json") as f:
      saved = json.load(f)
    assert saved["seed"] == seed and saved["seeds"] == [] and saved["sweep"] == ""
  for seed in config.seeds[1:]:  # the later replicas: a mix-up with replica 0 cannot pass
    single = make()
    single.seed = seed
    train.train_and_evaluate(single, str(tmp_path / f"single{seed}"))
    assert_same_run(tmp_path / "multi" / f"s{seed}", tmp_path / f"single{seed}")
  # replicas differ from each other (their own keys and data order)
  a, b = (logged(tmp_path / "multi" / f"s{s}") for s in config.seeds[:2])
  assert any(not np.isclose(a[k], b[k]) for k in a)


def test_a_swept_learning_rate_trains_each_point_as_its_single_run(tmp_path):
  config = classifier(steps=10, checkpoint_every=0)
  config.seeds = (0,)
  config.sweep = "optim.lr=0.002,0.01;optim.weight_decay=0,0.001"
  train.train_and_evaluate(config, str(tmp_path / "multi"))
  names = sorted(os.listdir(tmp_path / "multi"))
  assert "optim.lr=0.01,optim.weight_decay=0.001" in names
  single = classifier(steps=10, checkpoint_every=0)
  single.optim.lr, single.optim.weight_decay = 0.01, 0.001
  train.train_and_evaluate(single, str(tmp_path / "single"))
  # the lr schedule of a swept lr is lr times the schedule of lr 1: equal to float rounding
  point = tmp_path / "multi" / "optim.lr=0.01,optim.weight_decay=0.001" / "s0"
  assert_same_run(point, tmp_path / "single", rtol=2e-4)
  lrs = {
    p: [r["train/lr"] for r in rows(tmp_path / "multi" / p / "s0") if "train/lr" in r]
    for p in names
    if p.startswith("optim.")
  }
  assert (
    lrs["optim.lr=0.01,optim.weight_decay=0.001"][-1]
    > lrs["optim.lr=0.002,optim.weight_decay=0"][-1]
  )
  # same seed and lr, another weight decay: the decayed replica ends with smaller weights
  norms = {
    wd: [
      r["train/param_norm"]
      for r in rows(tmp_path / "multi" / f"optim.lr=0.01,optim.weight_decay={wd}" / "s0")
      if "train/param_norm" in r
    ][-1]
    for wd in ("0", "0.001")
  }
  assert norms["0.001"] < norms["0"]


def test_a_swept_weight_decay_is_the_replicas_own():
  cfg = optim.default_config()
  cfg.schedule, cfg.clip_norm, cfg.weight_decay = "constant", 0.0, 1e-4
  params = {"w": jnp.ones(3)}
  for wd in (0.0, 0.5):
    opt = optim.make_optimizer(cfg, 10, {"weight_decay": jnp.float32(wd)})
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -cfg.lr * wd, rtol=1e-6, atol=1e-12)


@pytest.mark.heavy
def test_a_shape_changing_sweep_runs_one_program_per_value_in_the_same_layout(tmp_path):
  config = classifier(steps=5, checkpoint_every=0, log_every=5)
  config.evals.test.every = 0
  config.seeds = (0, 1)
  config.sweep = "model.hidden=(32,),(16, 16)"
  train.train_and_evaluate(config, str(tmp_path / "multi"))
  for point in ("model.hidden=(32,)", "model.hidden=(16,16)"):
    for seed in (0, 1):
      assert rows(tmp_path / "multi" / point / f"s{seed}")[-1]["step"] == 5
  single = classifier(steps=5, checkpoint_every=0, log_every=5)
  single.evals.test.every = 0
  single.seed, single.model.hidden = 1, (16, 16)
  train.train_and_evaluate(single, str(tmp_path / "single"))
  assert_same_run(tmp_path / "multi" / "model.hidden=(16,16)" / "s1", tmp_path / "single")


def test_an_interrupted_multi_seed_run_resumes_to_the_uninterrupted_result(tmp_path):
  config = classifier()
  config.seeds = (0, 1, 2)
  train.train_and_evaluate(config, str(tmp_path / "full"))
  # the same run stopped at its step-10 checkpoint, then resumed by rerunning it
  stopped = classifier(steps=20)
  stopped.seeds = (0, 1, 2)
  train.train_and_evaluate(stopped, str(tmp_path / "cut"))
  ckpts = tmp_path / "cut" / "checkpoints"
  os.rename(ckpts / "20", tmp_path / "removed_20")
  for seed in (0, 1, 2):
    path = tmp_path / "cut" / f"s{seed}" / "metrics.jsonl"
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= 10]
    path.write_text("\n".join(kept) + "\n")
  summary = train.train_and_evaluate(stopped, str(tmp_path / "cut"))
  assert summary["step"] == 20
  _, full, data_full = final_params(config, tmp_path / "full")
  _, cut, data_cut = final_params(config, tmp_path / "cut")
  assert data_full == data_cut and len(data_cut["replicas"]) == 3
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), full, cut)
  for seed in (0, 1, 2):
    assert logged(tmp_path / "full" / f"s{seed}") == logged(tmp_path / "cut" / f"s{seed}")


def test_replicas_run_on_an_eight_device_mesh_with_fsdp(tmp_path):
  assert jax.device_count() == 8
  config = classifier(steps=10, checkpoint_every=0)
  config.seeds = (0, 1)
  config.num_devices, config.mesh.fsdp = 8, 2
  config.sharding.fsdp_min_bytes = 0
  run = train.build(config)
  leaves = [x for x in jax.tree.leaves(run.state) if x.ndim >= 1]
  # the replica axis is whole on every device, and FSDP still shards within a replica
  assert all(x.addressable_shards[0].data.shape[0] == 2 for x in leaves)
  assert any(x.addressable_shards[0].data.shape != x.shape for x in leaves)
  train.train_and_evaluate(config, str(tmp_path / "mesh"))
  single = classifier(steps=10, checkpoint_every=0)
  single.seed = 1
  train.train_and_evaluate(single, str(tmp_path / "single"))
  assert_same_run(tmp_path / "mesh" / "s1", tmp_path / "single", rtol=2e-5)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("seeds", (0, 0), "listed twice"),
    ("sweep", "optim.lrr=1e-3", "config.optim.lrr does not exist"),
    ("sweep", "optim.lr", "is not 'field=value"),
    ("sweep", "optim.lr=1e-3;optim.lr=2e-3", "twice"),
  ],
)
def test_bad_seeds_or_sweeps_stop_with_one_line_naming_the_field(field, value, message):
  config = classifier()
  setattr(config, field, value)
  with pytest.raises(ConfigError, match=message):
    train.build(config)


def test_replica_names_and_hyperparameters():
  config = classifier()
  config.seeds = (3, 4)
  config.sweep = "optim.lr=1e-3,3e-4"
  reps = replicas.replicas(config)
  assert [r.name for r in reps] == [
    "optim.lr=0.001/s3",
    "optim.lr=0.001/s4",
    "optim.lr=0.0003/s3",
    "optim.lr=0.0003/s4",
  ]
  assert reps[2].config.optim.lr == 3e-4 and reps[2].config.seed == 3
  assert config.optim.lr == 2e-3  # the program's config is left as it was
  np.testing.assert_allclose(replicas.hyperparameters(reps)["lr"], [1e-3, 1e-3, 3e-4, 3e-4])


@pytest.mark.parametrize("name", ["enroll", "set_max"])
def test_methods_that_generate_data_on_device_take_each_replicas_seed_from_its_batch(name):
  """The program's one method, given replica r's batch, computes the loss that the method built
  from replica r's own config computes (its generation key comes from its seed)."""
  config = load_config(name, "tiny")
  config.num_devices, config.seeds = 1, (0, 5)
  run = train.build(config)
  batch = run.next_batch()
  r = 1
  params = jax.tree.map(lambda x: x[r], run.state.params)
  mine = {k: v[r] for k, v in batch.items()}
  assert int(mine["generation_seed"][0]) == 5
  own_method = train.outputs(run, "unused")[r].method
  without_seed = {k: v for k, v in mine.items() if k != "generation_seed"}
  rng = jax.random.key(0)
  shared, _ = jax.jit(run.method.loss)(params, mine, rng)
  own, _ = jax.jit(own_method.loss)(params, without_seed, rng)
  np.testing.assert_allclose(shared, own, rtol=1e-6)
  other, _ = jax.jit(run.method.loss)(params, without_seed, rng)  # the program's seed, 0
  assert not np.isclose(other, own)


def test_a_shape_changing_field_splits_the_sweep_into_programs():
  """The sequential fallback (its training run: the heavy test above): one program per value of a
  field outside IN_PROGRAM, each keeping the in-program fields as its own sweep."""
  config = classifier()
  config.seeds = (0, 1)
  config.sweep = "model.hidden=(32,),(16, 16);optim.lr=1e-3,3e-4"
  programs = replicas.programs(config)
  assert [sub for sub, _ in programs] == ["model.hidden=(32,)", "model.hidden=(16,16)"]
  sub, second = programs[1]
  assert second.model.hidden == (16, 16) and second.seeds == (0, 1)
  assert replicas.parse_sweep(second.sweep) == [("optim.lr", (1e-3, 3e-4))]
  assert [r.name for r in replicas.replicas(second)][:2] == [
    "optim.lr=0.001/s0",
    "optim.lr=0.001/s1",
  ]
  with pytest.raises(ConfigError, match="change the program"):
    replicas.replicas(config)
