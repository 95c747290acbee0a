"""Writes a classifier run's penultimate features to files, for the enrollment method to read.

`configs/classifier.py:fashion_mnist` runs this evaluator at the end of its run (`every=0`), and

    python launch/eval.py --config=configs/classifier.py:fashion_mnist --workdir=DIR \
        --evals=embeddings

runs it on an existing run. The encoder is handed to the data side as files, so no data module
restores a model: jaxrepr/embedding_sources.py ('encoder' sources) only reads them.

For every split in `splits` it writes, into `<workdir>/embeddings/` (format:
jaxrepr/embedding_sources.py, `encoder_file`):
  <split>.npz            the features of every image of the split, labelled by class
                         ('embeddings' (N, h), 'labels' (N,)): identities are the classes.
  <split>_instances.npz  the features of `views` augmented views of the first `num_images` images
                         (0, or more than the split holds: all), labelled by image: identity i =
                         image i, each walk a random translation by up to `shift` pixels (zero
                         fill) plus N(0, noise^2) pixel noise, clipped to [0, 1], drawn from
                         `seed`; 'group' is the view and 'class' the image's class, and the
                         settings are stored with the arrays.

Features are the classifier model's `features` output (the last hidden layer, float32), computed on
the run's mesh in global batches of `batch_size`. Metrics: num_embeddings (rows written over all
files) and dim (the feature width).

Fields: splits (('test',)), batch_size (500, global), num_images (1000), views (8), shift (2),
noise (0.1), seed (0).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxrepr import data as data_contract, embedding_sources, parallel, registry
from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError
from jaxrepr.methods.classifier.model import make_model

SPLITS = ("train", "test")


def instance_views(
  images: np.ndarray, *, views: int, shift: int, noise: float, seed: int
) -> np.ndarray:
  """`views` augmented copies of NHWC images in [0, 1], view-major: row v * n + i is view v of
  image i (the module docstring gives the augmentation)."""
  rng = np.random.default_rng(seed)
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  out = []
  for _ in range(views):
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    view = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out.append(np.clip(view + noise * rng.standard_normal(view.shape), 0.0, 1.0).astype(np.float32))
  return np.concatenate(out)


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  # Written aside, then renamed: a reader never sees half a file.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    splits=("test",),
    batch_size: int = 500,
    num_images: int = 1000,
    views: int = 8,
    shift: int = 2,
    noise: float = 0.1,
    seed: int = 0,
  ):
    del method  # the features are the model's hidden layer, not what `predict` returns
    if config.method != "classifier":
      raise ConfigError(
        f"the classifier_embeddings evaluator embeds with a 'classifier' model; "
        f"config.method is {config.method!r}"
      )
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
      raise ConfigError(
        f"config.evals.<name>.splits={tuple(splits)!r}: each must be one of {SPLITS}"
      )
    if num_images < 0 or views < 1 or shift < 0 or noise < 0:
      raise ConfigError(
        f"config.evals.<name>: num_images={num_images} must be >= 0, views={views} "
        f">= 1, shift={shift} >= 0 and noise={noise} >= 0"
      )
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    eval_arrays = data_contract.eval_arrays_fn(registry.data_module(config))
    if eval_arrays is None:
      raise ConfigError(
        f"config.data.name={config.data.name!r} has no labelled image set "
        "(eval_arrays); the classifier_embeddings evaluator needs one"
      )
    # Loaded now: a missing data set stops the run before its first step.
    self._images = {s: eval_arrays(config.data, s) for s in splits}
    self._workdir, self._mesh, self._batch_size = workdir, mesh, batch_size
    self._instances = dict(num_images=num_images, views=views, shift=shift, noise=noise, seed=seed)
    model = make_model(config.model, config.precision)

    def features(params, batch):
      _, h_BxD = model.apply(
        {"params": params}, batch["image"].astype(jnp.float32), False, return_features=True
      )
      return h_BxD.astype(jnp.float32)

    self._features = jax.jit(features, out_shardings=parallel.replicated(mesh))

  def embed(self, params, images: np.ndarray) -> np.ndarray:
    """Features (N, h) of NHWC images, in order."""
    parts = []
    batches = pipeline.eval_batches(
      {"image": images},
      self._batch_size,
      shard_index=jax.process_index(),
      shard_count=jax.process_count(),
    )
    for batch in batches:
      del batch["mask"]  # the padded rows of the last batch are cut below
      parts.append(parallel.fetch(self._features(params, parallel.to_global(batch, self._mesh))))
    return np.concatenate(parts)[: len(images)]

  def run(self, params, rng, step) -> dict[str, float]:
    del rng, step  # deterministic: the views come from `seed`
    rows, dim = 0, 0
    for split, data in self._images.items():
      images, labels = data["image"], np.asarray(data["label"], np.int32)
      x = self.embed(params, images)
      n = self._instances["num_images"] or len(images)
      n = min(n, len(images))
      views = self._instances["views"]
      settings = {k: self._instances[k] for k in ("views", "shift", "noise", "seed")}
      inst = self.embed(params, instance_views(images[:n], **settings))
      instances = {
        "embeddings": inst,
        "labels": np.tile(np.arange(n, dtype=np.int32), views),
        "group": np.repeat(np.arange(views, dtype=np.int32), n),  # the walk (view)
        "class": np.tile(labels[:n], views),
        "num_images": np.asarray(n),
        "split_size": np.asarray(len(images)),
        **{k: np.asarray(v) for k, v in settings.items()},
      }
      if jax.process_index() == 0 and self._workdir:
        _write_npz(
          embedding_sources.encoder_file(self._workdir, split, "class"),
          {"embeddings": x, "labels": labels},
        )
        _write_npz(embedding_sources.encoder_file(self._workdir, split, "instance"), instances)
      rows, dim = rows + len(x) + len(inst), x.shape[1]
    return {"num_embeddings": float(rows), "dim": float(dim)}
