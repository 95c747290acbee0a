"""Readers of the on-disk image formats jaxrepr/data/images.py loads from a user's directory: IDX
files (MNIST, Fashion-MNIST; optionally gzipped) and the CIFAR "python version" pickled batches.

Errors name the file: a missing file (with how to get it), a wrong IDX magic number, a size that
disagrees with the header, a CIFAR batch without the expected keys. CIFAR batches are unpickled
with only numpy's array constructors allowed as globals, so a crafted batch that names any other
callable (os.system, eval, ...) is refused instead of being run.
"""

from __future__ import annotations

import gzip
import os
import pickle
from typing import Any

import numpy as np

from jaxrepr.errors import DataError, MissingFileError

_IDX_DTYPES = {
  0x08: np.uint8,
  0x09: np.int8,
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


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
