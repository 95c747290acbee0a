"""Embedding sources: the vMF sampler's statistics, the .npz loader's errors, identity splits, and
the classifier's feature output."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxrepr.data import embeddings
from jaxrepr.methods.classifier.model import make_model


@pytest.mark.parametrize("dim,kappa", [(3, 5.0), (16, 20.0), (64, 48.0), (64, 500.0)])
def test_vmf_mean_resultant_length_matches_the_bessel_ratio(dim, kappa):
  rng = np.random.default_rng(0)
  mu = rng.standard_normal(dim)
  mu /= np.linalg.norm(mu)
  x = embeddings.vmf_sample(rng, mu, kappa, 20000)
  np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-9)
  cos = x @ mu
  want = embeddings.vmf_mean_resultant_length(dim, kappa)
  se = cos.std() / np.sqrt(len(cos))
  assert abs(cos.mean() - want) < 4 * se, (cos.mean(), want, se)
  # the component orthogonal to mu averages to zero: E[x] = A_d(kappa) mu
  mean = x.mean(axis=0)
  assert np.linalg.norm(mean - want * mu) < 6 * np.sqrt(dim / len(x)) * max(1 - want, 0.05)


def test_vmf_theory_and_source():
  # A_3(kappa) = coth(kappa) - 1/kappa in closed form
  np.testing.assert_allclose(
    embeddings.vmf_mean_resultant_length(3, 2.0), 1 / np.tanh(2.0) - 0.5, rtol=1e-10
  )
  uniform = embeddings.vmf_sample(np.random.default_rng(1), np.eye(8)[0], 0.0, 20000)
  assert abs(uniform[:, 0].mean()) < 0.02
  src = embeddings.vmf_source(dim=8, kappa=30.0, num_identities=5, samples_per_identity=4, seed=0)
  assert src["embeddings"].shape == (20, 8) and src["embeddings"].dtype == np.float32
  np.testing.assert_array_equal(src["labels"], np.repeat(np.arange(5), 4))
  again = embeddings.vmf_source(dim=8, kappa=30.0, num_identities=5, samples_per_identity=4, seed=0)
  np.testing.assert_array_equal(src["embeddings"], again["embeddings"])
  crowded = embeddings.vmf_source(8, 30.0, 50, 2, seed=0, identity_kappa=20.0)["embeddings"]
  spread = embeddings.vmf_source(8, 30.0, 50, 2, seed=0)["embeddings"]
  assert np.linalg.norm(crowded.mean(0)) > 2 * np.linalg.norm(spread.mean(0))
  with pytest.raises(ValueError, match="kappa"):
    embeddings.vmf_sample(np.random.default_rng(0), np.ones(3), -1.0, 2)


def _save(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_load_npz_reads_and_names_bad_keys(tmp_path):
  x = np.random.default_rng(0).standard_normal((6, 3))
  good = _save(tmp_path / "good.npz", embeddings=x, labels=np.arange(6) % 3, group=np.zeros(6, int))
  src = embeddings.load_npz(good)
  assert src["embeddings"].dtype == np.float32 and src["labels"].dtype == np.int32
  assert set(src) == {"embeddings", "labels", "group"}
  cases = [
    (dict(labels=np.arange(6)), "missing key 'embeddings'"),
    (dict(embeddings=x), "missing key 'labels'"),
    (dict(embeddings=x[:, 0], labels=np.arange(6)), "key 'embeddings' must be a numeric"),
    (dict(embeddings=x, labels=np.arange(6) * 0.5), "key 'labels' must be an integer"),
    (dict(embeddings=x, labels=np.arange(5)), r"key 'labels' must be .* shape \(6,\)"),
    (dict(embeddings=x, labels=np.arange(6), group=np.arange(4)), "key 'group'"),
    (dict(embeddings=np.where(np.eye(6, 3) > 0, np.nan, x), labels=np.arange(6)), "non-finite"),
  ]
  for i, (arrays, message) in enumerate(cases):
    path = _save(tmp_path / f"bad{i}.npz", **arrays)
    with pytest.raises(ValueError, match=message) as err:
      embeddings.load_npz(path)
    assert path in str(err.value)
  missing = str(tmp_path / "absent.npz")
  with pytest.raises(FileNotFoundError, match="absent.npz"):
    embeddings.load_npz(missing)
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="junk.npz"):
    embeddings.load_npz(str(junk))


def test_identity_split_is_disjoint_and_complete():
  labels = np.repeat(np.arange(40), 3)
  train, test = embeddings.split_identities(labels, 0.25, seed=3)
  assert len(np.intersect1d(train, test)) == 0
  np.testing.assert_array_equal(np.union1d(train, test), np.arange(40))
  assert len(test) == 10
  spec = embeddings.source_config("vmf", dim=4, num_identities=40, samples_per_identity=3)
  parts = {}
  for split in ("train", "test", "all"):
    spec.split = split
    parts[split] = embeddings.make_source(spec)
  assert not set(parts["train"]["labels"]) & set(parts["test"]["labels"])
  assert len(parts["train"]["labels"]) + len(parts["test"]["labels"]) == 120
  np.testing.assert_allclose(np.linalg.norm(parts["all"]["embeddings"], axis=1), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="empty split"):
    embeddings.split_identities(np.arange(2), 0.1, 0)


def test_npz_source_spec_and_errors(tmp_path):
  rng = np.random.default_rng(0)
  path = _save(
    tmp_path / "e.npz", embeddings=rng.standard_normal((30, 4)) * 5, labels=np.arange(30) % 10
  )
  spec = embeddings.source_config("npz", path=path, split="all", normalize=False)
  src = embeddings.make_source(spec)
  assert np.linalg.norm(src["embeddings"], axis=1).max() > 2.0  # not normalised when asked not to
  with pytest.raises(ValueError, match="config.x.path must be set"):
    embeddings.validate_source(embeddings.source_config("npz"), "config.x")
  with pytest.raises(ValueError, match="kind"):
    embeddings.source_config("lfw")


def test_classifier_features_leave_params_and_logits_unchanged():
  for arch in ("cnn", "mlp"):
    cfg = ml_collections.ConfigDict(
      dict(arch=arch, channels=(4,), hidden=(8, 6), num_classes=3, dropout=0.1)
    )
    model = make_model(cfg)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    params = model.init(jax.random.key(1), x, False)
    params_f = model.init(jax.random.key(1), x, False, return_features=True)
    assert jax.tree.structure(params) == jax.tree.structure(params_f)
    logits, feats = model.apply(params, x, False, return_features=True)
    np.testing.assert_array_equal(logits, model.apply(params, x, False))
    assert feats.shape == (2, 6)
    last = params["params"]["MLP_0" if arch == "cnn" else "Dense_2"]
    last = last["Dense_2"] if arch == "cnn" else last
    head = np.asarray(feats) @ np.asarray(last["kernel"]) + np.asarray(last["bias"])
    np.testing.assert_allclose(head, logits, rtol=1e-5, atol=1e-6)


def test_encoder_source_without_a_run_names_the_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="configs/classifier.py"):
    embeddings.encoder_source(str(tmp_path))


# ------------------------------------------------------------- the encoder handed over as files
def _classifier_embeddings_config(**fields):
  from tests.core.helpers import load_config

  config = load_config("classifier", "tiny")
  config.num_devices = 1
  config.train.update(dict(steps=2, checkpoint_every=0, log_every=1))
  config.evals.test.every = 0
  config.evals.embeddings = dict(
    kind="classifier_embeddings",
    every=0,
    splits=("test",),
    batch_size=64,
    **dict(dict(num_images=20, views=3, shift=2, noise=0.1, seed=0), **fields),
  )
  return config


def test_the_evaluator_writes_the_model_features_the_encoder_source_reads(tmp_path):
  from jaxrepr import parallel
  from jaxrepr.data import images
  from jaxrepr.evaluators import classifier_embeddings, evaluator_fields
  from jaxrepr.methods import classifier

  config = _classifier_embeddings_config()
  method = classifier.build(config)
  test = images.eval_arrays(config.data, "test")
  params = method.init(jax.random.key(0), {"image": jnp.asarray(test["image"][:2])})
  mesh = parallel.make_mesh(1)
  ev = classifier_embeddings.Evaluator(
    config=config,
    method=method,
    mesh=mesh,
    workdir=str(tmp_path),
    **evaluator_fields(config.evals.embeddings),
  )
  with jax.set_mesh(mesh):
    out = ev.run(params, jax.random.key(0), 2)
  model = make_model(config.model)
  want = np.asarray(
    model.apply({"params": params}, jnp.asarray(test["image"]), False, return_features=True)[1]
  )
  n = len(test["label"])
  assert out == {"num_embeddings": float(n + 3 * 20), "dim": float(want.shape[1])}
  spec = embeddings.source_config(
    "encoder",
    workdir=str(tmp_path),
    split="all",
    normalize=False,
    identity="class",
    data_split="test",
  )
  src = embeddings.make_source(spec)
  np.testing.assert_allclose(src["embeddings"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(src["labels"], test["label"])
  # instances: the first 20 images in 3 walks, view-major; fewer images and views are a subset
  spec.update(dict(identity="instance", num_images=10, views=2))
  inst = embeddings.make_source(spec)
  assert inst["embeddings"].shape == (20, want.shape[1])
  np.testing.assert_array_equal(inst["labels"], np.tile(np.arange(10), 2))
  np.testing.assert_array_equal(inst["group"], np.repeat(np.arange(2), 10))
  np.testing.assert_array_equal(inst["class"], np.tile(test["label"][:10], 2))
  views = classifier_embeddings.instance_views(
    test["image"][:20], views=3, shift=2, noise=0.1, seed=0
  )
  first = np.asarray(
    model.apply({"params": params}, jnp.asarray(views[:10]), False, return_features=True)[1]
  )
  np.testing.assert_allclose(inst["embeddings"][:10], first, rtol=1e-5, atol=1e-6)
  # a source that asks for another augmentation, or more than was written, names the file
  for bad in (dict(noise=0.2), dict(views=4), dict(num_images=21), dict(num_images=0)):
    other = embeddings.source_config(
      "encoder",
      workdir=str(tmp_path),
      split="all",
      identity="instance",
      **dict(dict(num_images=10, views=2), **bad),
    )
    with pytest.raises(ValueError, match="test_instances.npz was written with num_images=20"):
      embeddings.make_source(other)


def test_a_classifier_run_writes_the_files_that_the_data_module_reads(tmp_path):
  """The hand-over end to end: the classifier run's final evaluation writes the files, and the
  'encoder' source of the embeddings data module reads them (no model is restored on that side)."""
  from jaxrepr import train

  train.train_and_evaluate(_classifier_embeddings_config(), str(tmp_path))
  for name in ("test.npz", "test_instances.npz"):
    assert os.path.getsize(tmp_path / "embeddings" / name) > 1000
  spec = embeddings.source_config(
    "encoder",
    workdir=str(tmp_path),
    split="all",
    normalize=False,
    identity="instance",
    num_images=20,
    views=3,
  )
  src = embeddings.make_source(spec)
  with np.load(tmp_path / "embeddings" / "test_instances.npz") as f:
    np.testing.assert_array_equal(src["embeddings"], f["embeddings"])
    assert f["embeddings"].shape[0] == 60 and np.all(np.isfinite(f["embeddings"]))


def test_missing_encoder_files_name_the_command_that_writes_them(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as err:
    embeddings.encoder_source(workdir)
  assert str(err.value) == (
    f"{workdir}/embeddings/test.npz: no classifier embeddings; write them with `python "
    f"launch/train.py --config=configs/classifier.py:fashion_mnist --workdir={workdir}`"
  )
  os.makedirs(os.path.join(workdir, "checkpoints", "1000"))  # a trained run without the files
  with pytest.raises(FileNotFoundError) as err:
    embeddings.encoder_source(workdir, identity="instance")
  assert str(err.value) == (
    f"{workdir}/embeddings/test_instances.npz: no classifier embeddings; write them with "
    f"`python launch/eval.py --config=configs/classifier.py:fashion_mnist --workdir={workdir} "
    "--evals=embeddings`"
  )
