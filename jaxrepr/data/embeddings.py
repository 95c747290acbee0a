"""Embedding sources with identity labels, for open-set enrollment (`jaxrepr.methods.enroll`).

A source is a plain dict of host arrays: 'embeddings' float32 (M, d), 'labels' int32 (M,) and,
optionally, 'group' int32 (M,) (the walk or condition of each sample). Three families:

* `vmf_source`: synthetic identities as von Mises-Fisher clusters on the unit sphere S^{d-1}. Each
  identity has a centre mu_i (uniform on the sphere, or, with `identity_kappa > 0`, itself vMF
  around one common direction, so that identities crowd together), and its samples are
  vMF(mu_i, kappa), drawn exactly with Wood's (1994) rejection sampler. Dimension, concentration
  and identity count are the knobs that simulate "different datasets": E[mu . x] = A_d(kappa) =
  I_{d/2}(kappa) / I_{d/2-1}(kappa).
* `load_npz`: a user's `.npz` file with `embeddings` (M, d), `labels` (M,) and optional `group`.
* `encoder_source`: penultimate features of a `jaxrepr` image classifier (configs/classifier.py)
  restored from its workdir, on a held-out image split. Identities are either the classes
  (`identity='class'`: 10 for the image sets here) or single images seen under augmentation
  (`identity='instance'`: identity i = test image i, each walk a random shift of it plus pixel
  noise, so there are as many identities as images and same-class images are hard negatives).

Sources are split by identity, never by sample (`split_identities`, `select`): the enrollment
model trains on some identities and is tested on others.

`config.data` (name 'embeddings') holds the training source spec (`source_config`) plus the scenario
ranges of `jaxrepr.methods.enroll.episodes`; the host iterator only yields example ids (as
`jaxrepr.data.sets`), the episodes are drawn on device from (data seed, example id).
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from jaxrepr.data import sets
from jaxrepr.errors import ConfigError, DataError, MissingFileError

KINDS = ("vmf", "npz", "encoder")
SPLITS = ("train", "test", "all")
EVAL_ID_OFFSET = sets.EVAL_ID_OFFSET
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


def vmf_source(dim: int, kappa: float, num_identities: int, samples_per_identity: int, seed: int,
               identity_kappa: float = 0.0) -> Source:
  """`num_identities` vMF clusters of `samples_per_identity` unit vectors each (see the module
  docstring)."""
  if num_identities < 2 or samples_per_identity < 1:
    raise DataError(f"vmf_source needs >= 2 identities and >= 1 sample each, got "
                    f"{num_identities} and {samples_per_identity}")
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
      raise DataError(f"{path}: missing key {key!r} (found {sorted(arrays)}); an embeddings file "
                      "needs 'embeddings' (M, d), 'labels' (M,) and optionally 'group' (M,)")
  x, labels = arrays["embeddings"], arrays["labels"]
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.number):
    raise DataError(f"{path}: key 'embeddings' must be a numeric (M, d) array, got {x.dtype} "
                    f"{x.shape}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{path}: key 'embeddings' holds {int(np.sum(~np.isfinite(x)))} non-finite "
                    "values")
  out = {"embeddings": x.astype(np.float32)}
  for key in ("labels", "group"):
    if key not in arrays:
      continue
    a = arrays[key]
    if a.shape != (len(x),) or not np.issubdtype(a.dtype, np.integer):
      raise DataError(f"{path}: key {key!r} must be an integer array of shape ({len(x)},) to "
                      f"match 'embeddings', got {a.dtype} {a.shape}")
    out[key] = a.astype(np.int32)
  return out


# -------------------------------------------------------------------------------- image encoders
# The run that configs/enroll.py:real reads by default; any configs/classifier.py run works.
ENCODER_COMMAND = "python launch/train.py --config=configs/classifier.py:fashion_mnist"


def _check_classifier_run(workdir: str) -> None:
  """Raises MissingFileError, naming the command that makes one, unless `workdir` holds a
  classifier run with a checkpoint. Cheap (reads no arrays), so a missing run is reported before
  the data and the model are loaded; the enroll evaluator gets here when it is built, before the
  trainer's first step."""
  hint = f"train one with `{ENCODER_COMMAND} --workdir={workdir}`"
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise MissingFileError(f"{workdir}/config.json: no classifier run in {workdir}; {hint}")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  # Orbax names a step's directory by the step number.
  steps = [n for n in os.listdir(ckpt_dir) if n.isdigit()] if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise MissingFileError(f"{ckpt_dir}: the classifier run has no checkpoint yet; {hint}")


def load_classifier(workdir: str):
  """(model, params, config) of the latest checkpoint of a configs/classifier.py run in
  `workdir`."""
  import jax

  from jaxrepr import checkpoint, optim
  from jaxrepr.methods.classifier.model import make_model
  from jaxrepr.train_step import create_state

  _check_classifier_run(workdir)
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.method != "classifier":
    raise DataError(f"{path}: the encoder must be a 'classifier' run, got method "
                    f"{config.method!r}")
  model = make_model(config.model, config.get("precision", None) or "float32")
  images = load_images(config.data, "test")["image"][:1]
  tx = optim.make_optimizer(config.optim, config.train.steps)
  abstract = jax.eval_shape(
      lambda: create_state(model.init(jax.random.key(0), images, False)["params"], tx))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), 1, read_only=True)
  try:
    restored = ckpt.restore_latest(abstract) if ckpt.all_steps() else None
  finally:
    ckpt.close()
  if restored is None:
    raise MissingFileError(f"{workdir}/checkpoints: no classifier checkpoint that restores; "
                           f"train one with `{ENCODER_COMMAND} --workdir={workdir}`")
  return model, restored[1].params, config


def load_images(data_cfg, split: str):
  from jaxrepr.data import images

  return images.load(data_cfg, split)


def embed_images(model, params, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Penultimate features (the classifier's `features` output) of NHWC images, float32 (N, h)."""
  import jax
  import jax.numpy as jnp

  fn = jax.jit(lambda p, x: model.apply({"params": p}, x, False, return_features=True)[1].astype(
      jnp.float32))
  parts = [np.asarray(fn(params, images[i:i + batch_size])) for i in range(0, len(images),
                                                                            batch_size)]
  return np.concatenate(parts).astype(np.float32)


def encoder_source(workdir: str, *, split: str = "test", identity: str = "class",
                   num_images: int = 0, views: int = 8, shift: int = 2, noise: float = 0.1,
                   seed: int = 0) -> Source:
  """Embeddings of the classifier in `workdir` on its data set's `split` (module docstring).

  identity='class': labels are the classes; `num_images` > 0 keeps the first that many images.
  identity='instance': the first `num_images` images are the identities, each seen in `views`
  walks: a random translation by up to `shift` pixels (zero fill) plus N(0, noise^2) pixel noise,
  drawn from `seed`.
  """
  model, params, config = load_classifier(workdir)
  data = load_images(config.data, split)
  imgs, labels = data["image"], data["label"]
  if num_images:
    imgs, labels = imgs[:num_images], labels[:num_images]
  if identity == "class":
    return {"embeddings": embed_images(model, params, imgs), "labels": labels.astype(np.int32)}
  if identity != "instance":
    raise DataError(f"encoder source identity must be 'class' or 'instance', got {identity!r}")
  rng = np.random.default_rng(seed)
  n, h, w, _ = imgs.shape
  padded = np.pad(imgs, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  out = []
  for _ in range(views):
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    view = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out.append(np.clip(view + noise * rng.standard_normal(view.shape), 0.0, 1.0).astype(np.float32))
  views_x = np.concatenate(out)  # view-major: row v * n + i is view v of image i
  return {"embeddings": embed_images(model, params, views_x),
          "labels": np.tile(np.arange(n, dtype=np.int32), views),
          "group": np.repeat(np.arange(views, dtype=np.int32), n),  # the walk (view) index
          "class": np.tile(labels.astype(np.int32), views)}


# ------------------------------------------------------------------------------- identity splits
def split_identities(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, test) sorted arrays of identity values: a seeded split of the identities,
  never of samples."""
  ids = np.unique(labels)
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"identity test_fraction must be in (0, 1), got {test_fraction}")
  order = np.random.default_rng(seed).permutation(ids)
  n_test = int(round(len(ids) * test_fraction))
  if n_test < 1 or n_test >= len(ids):
    raise DataError(f"test_fraction={test_fraction} of {len(ids)} identities leaves an empty "
                    "split")
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
  c.update(dict(dim=64, kappa=48.0, num_identities=800, samples_per_identity=16, seed=0,
                identity_kappa=0.0))
  # npz
  c.path = ml_collections.config_dict.placeholder(str)
  # encoder
  c.workdir = ml_collections.config_dict.placeholder(str)
  c.update(dict(data_split="test", identity="class", num_images=0, views=8, shift=2, noise=0.1))
  c.update(fields)
  return c


def validate_source(spec: ml_collections.ConfigDict, field: str) -> None:
  if spec.kind not in KINDS:
    raise ConfigError(f"{field}.kind={spec.kind!r} must be one of {KINDS}")
  if spec.split not in SPLITS:
    raise ConfigError(f"{field}.split={spec.split!r} must be one of {SPLITS}")
  if spec.kind == "vmf" and (spec.dim < 2 or spec.kappa < 0 or spec.num_identities < 2):
    raise ConfigError(f"{field}: vmf needs dim >= 2, kappa >= 0 and num_identities >= 2")
  if spec.kind in ("npz", "encoder") and not spec.get("path" if spec.kind == "npz" else "workdir"):
    key = "path" if spec.kind == "npz" else "workdir"
    raise ConfigError(f"{field}.{key} must be set for a {spec.kind!r} source")


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
    src = vmf_source(spec.dim, spec.kappa, spec.num_identities, spec.samples_per_identity,
                     spec.seed, spec.get("identity_kappa", 0.0))
  elif spec.kind == "npz":
    src = load_npz(spec.path)
  elif spec.kind == "encoder":
    src = encoder_source(spec.workdir, split=spec.data_split, identity=spec.identity,
                         num_images=spec.num_images, views=spec.views, shift=spec.shift,
                         noise=spec.noise, seed=spec.seed)
  else:
    raise DataError(f"embedding source kind must be one of {KINDS}, got {spec.kind!r}")
  if spec.split != "all":
    train_ids, test_ids = split_identities(src["labels"], spec.test_fraction, spec.split_seed)
    src = select(src, train_ids if spec.split == "train" else test_ids)
  if spec.normalize:
    x = src["embeddings"]
    src["embeddings"] = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(
        np.float32)
  return src


# ------------------------------------------------------------------------------ training iterator
def train_iterator(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                   shard_index: int = 0, shard_count: int = 1) -> sets.ExampleIdIterator:
  """Training episode ids (episodes are drawn on device from the data seed and these ids)."""
  del seed, cfg
  return sets.ExampleIdIterator(batch_size, shard_index=shard_index, shard_count=shard_count)


def default_config() -> ml_collections.ConfigDict:
  """`config.data` of an enrollment run: the training source and the episode settings
  (`jaxrepr.methods.enroll.episodes`)."""
  c = ml_collections.ConfigDict()
  c.name = "embeddings"
  c.seed = ml_collections.config_dict.placeholder(int)  # episode seed (default: config.seed)
  c.source = source_config("vmf")
  c.n_id_range = (5, 40)  # gallery identities per episode, inclusive
  c.walks_range = (1, 8)  # walks (samples) per gallery identity, inclusive
  c.context_size = 16  # K nearest gallery samples given to the model
  c.distance = "cosine"  # or 'l2'
  c.known_fraction = 0.5
  c.probe_groups = ()  # `group` values reserved for probes (empty: any held-out sample)
  return c
