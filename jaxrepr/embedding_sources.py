"""Embedding sources with identity labels: what the enrollment method (jaxrepr/methods/enroll)
trains and is evaluated on, shared by that method and the data module jaxrepr/data/embeddings.py.

The method draws its training episodes on device from a table of the training source, which it
builds when it is built; a method never imports a data module, so the sources live here, in a
module both sides may import (it imports nothing of jaxrepr but errors.py).

A source is a plain dict of host arrays: 'embeddings' float32 (M, d), 'labels' int32 (M,) and,
optionally, 'group' int32 (M,) (the walk or condition of each sample). Three kinds:

* 'vmf' (`vmf_source`): synthetic identities as von Mises-Fisher clusters on the unit sphere
  S^{d-1}. Each identity has a centre mu_i (uniform on the sphere, or, with `identity_kappa > 0`,
  itself vMF around one common direction, so that identities crowd together), and its samples are
  vMF(mu_i, kappa), drawn exactly with Wood's (1994) rejection sampler. Dimension, concentration
  and identity count are the knobs that simulate "different datasets": E[mu . x] = A_d(kappa) =
  I_{d/2}(kappa) / I_{d/2-1}(kappa).
* 'npz' (`load_npz`): a user's `.npz` file with `embeddings` (M, d), `labels` (M,) and optional
  `group`.
* 'encoder' (`encoder_source`): penultimate features of a `jaxrepr` image classifier
  (configs/classifier.py) on a held-out image split, read from the files that the classifier run's
  `classifier_embeddings` evaluator wrote into `<workdir>/embeddings/` (the fashion_mnist variant
  writes them at the end of its run; `python launch/eval.py --config=configs/classifier.py:
  fashion_mnist --workdir=<dir> --evals=embeddings` writes them for an existing run). Identities
  are either the classes (`identity='class'`, `<split>.npz`: 10 for the image sets here) or single
  images seen under augmentation (`identity='instance'`, `<split>_instances.npz`: identity i = image
  i, each walk a random shift of it plus pixel noise, so there are as many identities as images and
  same-class images are hard negatives).

Sources are split by identity, never by sample (`split_identities`, `select`): the enrollment
model trains on some identities and is tested on others.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from jaxrepr.errors import ConfigError, DataError, MissingFileError

KINDS = ("vmf", "npz", "encoder")
SPLITS = ("train", "test", "all")
IDENTITIES = ("class", "instance")
Source = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------- vMF family
def _uniform_sphere(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
  x = rng.standard_normal((n, dim))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def vmf_sample(rng: np.random.Generator, mu: np.ndarray, kappa: float, n: int) -> np.ndarray:
  """n exact draws from vMF(mu, kappa) on S^{d-1} (Wood 1994), float64 (n, d); kappa = 0 is uniform.

  The component along mu, W, is drawn by rejection from a Beta((d-1)/2, (d-1)/2) proposal; the rest
  is a uniform direction orthogonal to mu, rotated into place with a Householder reflection.
  """
  mu = np.asarray(mu, np.float64)
  dim = mu.shape[0]
  if dim < 2:
    raise DataError(f"vMF needs dimension >= 2, got {dim}")
  if kappa < 0:
    raise DataError(f"vMF concentration kappa must be >= 0, got {kappa}")
  mu = mu / np.linalg.norm(mu)
  if kappa == 0:
    return _uniform_sphere(rng, n, dim)
  m1 = dim - 1.0
  b = m1 / (2.0 * kappa + np.sqrt(4.0 * kappa**2 + m1**2))  # the stable form of Wood's b
  x0 = (1.0 - b) / (1.0 + b)
  c = kappa * x0 + m1 * np.log(1.0 - x0**2)
  w = np.empty(n)
  todo = np.arange(n)
  while todo.size:
    z = rng.beta(m1 / 2.0, m1 / 2.0, size=todo.size)
    u = rng.uniform(size=todo.size)
    cand = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
    ok = kappa * cand + m1 * np.log(1.0 - x0 * cand) - c >= np.log(u)
    w[todo[ok]] = cand[ok]
    todo = todo[~ok]
  v = _uniform_sphere(rng, n, dim - 1)  # uniform on the sphere orthogonal to e1
  x = np.concatenate([w[:, None], np.sqrt(np.clip(1.0 - w**2, 0.0, None))[:, None] * v], axis=1)
  # Householder reflection H = I - 2 h h^T / (h^T h), h = e1 - mu, maps e1 to mu
  h = -mu.copy()
  h[0] += 1.0
  hh = h @ h
  if hh > 1e-12:
    x = x - 2.0 * np.outer(x @ h, h) / hh
  return x


def vmf_mean_resultant_length(dim: int, kappa: float) -> float:
  """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E[mu . x] under vMF(mu, kappa) on S^{d-1}."""
  from scipy.special import ive  # exponentially scaled: the scale cancels in the ratio

  return float(ive(dim / 2.0, kappa) / ive(dim / 2.0 - 1.0, kappa))


def vmf_source(
  dim: int,
  kappa: float,
  num_identities: int,
  samples_per_identity: int,
  seed: int,
  identity_kappa: float = 0.0,
) -> Source:
  """`num_identities` vMF clusters of `samples_per_identity` unit vectors each (see the module
  docstring)."""
  if num_identities < 2 or samples_per_identity < 1:
    raise DataError(
      f"vmf_source needs >= 2 identities and >= 1 sample each, got "
      f"{num_identities} and {samples_per_identity}"
    )
  rng = np.random.default_rng(seed)
  if identity_kappa > 0:
    centres = vmf_sample(rng, _uniform_sphere(rng, 1, dim)[0], identity_kappa, num_identities)
  else:
    centres = _uniform_sphere(rng, num_identities, dim)
  x = np.concatenate([vmf_sample(rng, mu, kappa, samples_per_identity) for mu in centres])
  labels = np.repeat(np.arange(num_identities, dtype=np.int32), samples_per_identity)
  return {"embeddings": x.astype(np.float32), "labels": labels}


# ------------------------------------------------------------------------------------- user's .npz
def load_npz(path: str) -> Source:
  """A user's embeddings: `embeddings` (M, d) finite floats, `labels` (M,) integers, optional
  `group` (M,) integers. Errors name the file and the missing or bad key."""
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: np.asarray(f[k]) for k in f.files}
  except FileNotFoundError as e:
    raise MissingFileError(f"{path}: embeddings file not found") from e
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: not a readable .npz file ({e})") from e
  for key in ("embeddings", "labels"):
    if key not in arrays:
      raise DataError(
        f"{path}: missing key {key!r} (found {sorted(arrays)}); an embeddings file "
        "needs 'embeddings' (M, d), 'labels' (M,) and optionally 'group' (M,)"
      )
  x = arrays["embeddings"]
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.number):
    raise DataError(
      f"{path}: key 'embeddings' must be a numeric (M, d) array, got {x.dtype} {x.shape}"
    )
  if not np.all(np.isfinite(x)):
    raise DataError(
      f"{path}: key 'embeddings' holds {int(np.sum(~np.isfinite(x)))} non-finite values"
    )
  out = {"embeddings": x.astype(np.float32)}
  for key in ("labels", "group"):
    if key not in arrays:
      continue
    a = arrays[key]
    if a.shape != (len(x),) or not np.issubdtype(a.dtype, np.integer):
      raise DataError(
        f"{path}: key {key!r} must be an integer array of shape ({len(x)},) to "
        f"match 'embeddings', got {a.dtype} {a.shape}"
      )
    out[key] = a.astype(np.int32)
  return out


# -------------------------------------------------------------------------- image encoder files
# The encoder files of a classifier workdir. `<split>.npz`: 'embeddings' (N, h) and 'labels' (N,),
# every image of the split in order. `<split>_instances.npz`: views-major rows (row v * n + i is
# view v of image i) with 'embeddings', 'labels' (the image index), 'group' (the view), 'class',
# and the augmentation that made them as 0-d arrays (INSTANCE_SETTINGS, plus 'split_size').
ENCODER_DIR = "embeddings"
INSTANCE_SETTINGS = ("num_images", "views", "shift", "noise", "seed")
# The run that configs/enroll.py:real reads by default; its config writes the files at the end.
ENCODER_CONFIG = "configs/classifier.py:fashion_mnist"


def encoder_file(workdir: str, split: str, identity: str) -> str:
  """The file that holds a classifier run's embeddings of `split` for `identity`."""
  name = f"{split}.npz" if identity == "class" else f"{split}_instances.npz"
  return os.path.join(workdir, ENCODER_DIR, name)


def encoder_command(workdir: str) -> str:
  """The command that writes the encoder files into `workdir`: the evaluation of an existing
  classifier run, or the classifier run itself."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  # Orbax names a finished step's directory by its number.
  trained = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
  if trained:
    return f"python launch/eval.py --config={ENCODER_CONFIG} --workdir={workdir} --evals=embeddings"
  return f"python launch/train.py --config={ENCODER_CONFIG} --workdir={workdir}"


def _read_encoder_file(path: str, workdir: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise MissingFileError(
      f"{path}: no classifier embeddings; write them with `{encoder_command(workdir)}`"
    )
  source = load_npz(path)  # checks the embeddings, labels and group arrays
  with np.load(path, allow_pickle=False) as f:
    extra = {k: np.asarray(f[k]) for k in f.files if k not in source}
  return {**source, **extra}


def encoder_source(
  workdir: str,
  *,
  split: str = "test",
  identity: str = "class",
  num_images: int = 0,
  views: int = 8,
  shift: int = 2,
  noise: float = 0.1,
  seed: int = 0,
) -> Source:
  """Embeddings of the classifier run in `workdir` on its data set's `split` (module docstring).

  identity='class': labels are the classes; `num_images` > 0 keeps the first that many images.
  identity='instance': the first `num_images` images (0: all of the split) are the identities,
  each seen in `views` walks: a random translation by up to `shift` pixels (zero fill) plus
  N(0, noise^2) pixel noise, drawn from `seed`. The file must have been written with the same
  shift, noise and seed and at least as many images and views (the first ones are kept).
  """
  if identity not in IDENTITIES:
    raise DataError(f"encoder source identity must be one of {IDENTITIES}, got {identity!r}")
  path = encoder_file(workdir, split, identity)
  data = _read_encoder_file(path, workdir)
  if identity == "class":
    count = len(data["labels"])
    if num_images > count:
      raise DataError(f"{path} holds {count} images; the source asks num_images={num_images}")
    keep = slice(None, num_images or None)
    return {"embeddings": data["embeddings"][keep], "labels": data["labels"][keep]}
  missing = [k for k in INSTANCE_SETTINGS + ("split_size", "group", "class") if k not in data]
  if missing:
    raise DataError(f"{path}: missing keys {missing}; rewrite it with `{encoder_command(workdir)}`")
  got = {k: data[k].item() for k in INSTANCE_SETTINGS + ("split_size",)}
  wanted = num_images or got["split_size"]
  same = (got["shift"], got["seed"]) == (shift, seed) and np.isclose(got["noise"], noise)
  if not same or wanted > got["num_images"] or views > got["views"]:
    written = ", ".join(f"{k}={got[k]}" for k in INSTANCE_SETTINGS)
    raise DataError(
      f"{path} was written with {written}; the source asks num_images={num_images}, "
      f"views={views}, shift={shift}, noise={noise}, seed={seed} (the same shift, "
      "noise and seed, at most as many images and views): rewrite it with "
      f"`{encoder_command(workdir)}` and --config.evals.embeddings.<field>=..."
    )
  keep = (data["labels"] < wanted) & (data["group"] < views)
  return {k: data[k][keep] for k in ("embeddings", "labels", "group", "class")}


# ------------------------------------------------------------------------------- identity splits
def split_identities(
  labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, test) sorted arrays of identity values: a seeded split of the identities,
  never of samples."""
  ids = np.unique(labels)
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"identity test_fraction must be in (0, 1), got {test_fraction}")
  order = np.random.default_rng(seed).permutation(ids)
  n_test = int(round(len(ids) * test_fraction))
  if n_test < 1 or n_test >= len(ids):
    raise DataError(f"test_fraction={test_fraction} of {len(ids)} identities leaves an empty split")
  return np.sort(order[n_test:]), np.sort(order[:n_test])


def select(source: Source, identities: np.ndarray) -> Source:
  """The samples of the given identities."""
  keep = np.isin(source["labels"], identities)
  return {k: v[keep] for k, v in source.items()}


# ---------------------------------------------------------------------------------- config specs
def source_config(kind: str = "vmf", **fields: Any) -> ml_collections.ConfigDict:
  """A source spec: kind, its fields, `split` ('train' | 'test' | 'all' identities), the identity
  split's `test_fraction` / `split_seed`, and `normalize` (L2-normalise every embedding).

  Every spec declares the fields of every kind (`kind` picks the ones that are read), so a source
  can be switched on the command line, e.g. `--config.data.source.kind=npz
  --config.data.source.path=emb.npz`; the file and the workdir are placeholders that a spec of
  that kind must set.
  """
  if kind not in KINDS:
    raise ConfigError(f"embedding source kind must be one of {KINDS}, got {kind!r}")
  c = ml_collections.ConfigDict()
  c.kind = kind
  c.split = "train"
  c.test_fraction = 0.25
  c.split_seed = 0
  c.normalize = True
  # vmf (seed: the identities; for 'encoder', the augmentation of the walks)
  c.update(
    dict(
      dim=64, kappa=48.0, num_identities=800, samples_per_identity=16, seed=0, identity_kappa=0.0
    )
  )
  # npz
  c.path = ml_collections.config_dict.placeholder(str)
  # encoder: a classifier workdir whose embeddings files (`encoder_source`) match these fields
  c.workdir = ml_collections.config_dict.placeholder(str)
  c.update(dict(data_split="test", identity="class", num_images=0, views=8, shift=2, noise=0.1))
  c.update(fields)
  return c


def validate_source(spec: ml_collections.ConfigDict, field: str) -> None:
  """Raises ConfigError naming the bad field of the spec at `field` (e.g. 'config.data.source')."""
  if spec.kind not in KINDS:
    raise ConfigError(f"{field}.kind={spec.kind!r} must be one of {KINDS}")
  if spec.split not in SPLITS:
    raise ConfigError(f"{field}.split={spec.split!r} must be one of {SPLITS}")
  if spec.kind == "vmf" and (spec.dim < 2 or spec.kappa < 0 or spec.num_identities < 2):
    raise ConfigError(f"{field}: vmf needs dim >= 2, kappa >= 0 and num_identities >= 2")
  if spec.kind in ("npz", "encoder") and not spec.get("path" if spec.kind == "npz" else "workdir"):
    key = "path" if spec.kind == "npz" else "workdir"
    raise ConfigError(f"{field}.{key} must be set for a {spec.kind!r} source")
  if spec.kind == "encoder" and spec.identity not in IDENTITIES:
    raise ConfigError(f"{field}.identity={spec.identity!r} must be one of {IDENTITIES}")


_CACHE: dict[str, Source] = {}


def make_source(spec: ml_collections.ConfigDict) -> Source:
  """The source of a spec, restricted to its identity split, optionally L2-normalised. Cached per
  spec within a process (the method and each evaluator ask for the same sources)."""
  key = spec.to_json(sort_keys=True)
  if key not in _CACHE:
    if len(_CACHE) >= 8:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = _make_source(spec)
  return dict(_CACHE[key])


def _make_source(spec: ml_collections.ConfigDict) -> Source:
  if spec.kind == "vmf":
    src = vmf_source(
      spec.dim,
      spec.kappa,
      spec.num_identities,
      spec.samples_per_identity,
      spec.seed,
      spec.get("identity_kappa", 0.0),
    )
  elif spec.kind == "npz":
    src = load_npz(spec.path)
  elif spec.kind == "encoder":
    src = encoder_source(
      spec.workdir,
      split=spec.data_split,
      identity=spec.identity,
      num_images=spec.num_images,
      views=spec.views,
      shift=spec.shift,
      noise=spec.noise,
      seed=spec.seed,
    )
  else:
    raise DataError(f"embedding source kind must be one of {KINDS}, got {spec.kind!r}")
  if spec.split != "all":
    train_ids, test_ids = split_identities(src["labels"], spec.test_fraction, spec.split_seed)
    src = select(src, train_ids if spec.split == "train" else test_ids)
  if spec.normalize:
    x = src["embeddings"]
    src["embeddings"] = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(
      np.float32
    )
  return src
