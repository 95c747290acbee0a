"""The synthetic XOR modalities of Symile (Saporta et al., NeurIPS 2024, section 5.1): three binary
vectors whose dependence is only higher order.

a, b in {0,1}^{d_v} with iid Bern(0.5) entries; ONE switch i ~ Bern(p_hat) per example, shared by
all coordinates; c_j = a_j XOR b_j if i = 1, else c_j = a_j. For every p_hat, a and b are
independent and so are b and c, so pairwise objectives see nothing of b; b is a function of
(a, c) when i = 1. The task is to predict b from (a, c) among all 2^{d_v} binary vectors.

Batches: {'a', 'b', 'c': float32 (B, d_v)} of 0/1 entries ((B, d_v + 1) with `missing_prob`).
The train set (`train_size` examples) is fixed by `config.data.seed` and reshuffled every epoch by
the run's seed, as the reference code's 10k/1k/5k split; `eval_arrays(cfg, 'test')` is a
disjoint draw of `test_size`.

The exact joint distribution comes from enumerating the generator's own randomness (a, b, i)
through the same `xor_tuple` the sampler calls, so the information content and the Bayes accuracy
below are those of the data the runs see.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import ml_collections
import numpy as np

from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError

MODALITIES = ("a", "b", "c")
SPLIT_STREAMS = {"train": 0, "test": 1, "val": 2}


def default_config(d_v: int = 5, p_hat: float = 1.0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name="xor_modalities",
      d_v=d_v,
      p_hat=p_hat,
      train_size=10000,
      test_size=5000,
      seed=0,  # the data sets; the run's seed shuffles and initialises
      # > 0: every modality of every training example is missing with this probability, its bits
      # replaced by 0.5 and a 0/1 missingness indicator appended (test examples: fully observed,
      # indicator 0), as the reference code's missing-modality toy
      missing_prob=0.0,
    )
  )


def xor_tuple(a: np.ndarray, b: np.ndarray, switch: np.ndarray) -> np.ndarray:
  """c = a XOR b where the switch is on, else a (`switch` broadcasts over the coordinates)."""
  return np.where(switch, np.bitwise_xor(a, b), a)


def sample(rng: np.random.Generator, n: int, d_v: int, p_hat: float) -> dict[str, np.ndarray]:
  """n iid (a, b, c) tuples as float32 0/1 arrays (n, d_v)."""
  a = rng.integers(0, 2, (n, d_v), dtype=np.int8)
  b = rng.integers(0, 2, (n, d_v), dtype=np.int8)
  switch = rng.random((n, 1)) < p_hat
  c = xor_tuple(a, b, switch)
  return {k: v.astype(np.float32) for k, v in zip(MODALITIES, (a, b, c))}


def _check(cfg: ml_collections.ConfigDict) -> None:
  if not (isinstance(cfg.d_v, int) and cfg.d_v >= 1):
    raise ConfigError(f"config.data.d_v={cfg.d_v!r} must be an integer >= 1")
  if not 0.0 <= cfg.p_hat <= 1.0:
    raise ConfigError(f"config.data.p_hat={cfg.p_hat!r} must be in [0, 1]")
  if not 0.0 <= cfg.missing_prob < 1.0:
    raise ConfigError(f"config.data.missing_prob={cfg.missing_prob!r} must be in [0, 1)")


def load(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  _check(cfg)
  if split not in SPLIT_STREAMS:
    raise ConfigError(f"split {split!r} is not one of {tuple(SPLIT_STREAMS)}")
  n = cfg.train_size if split == "train" else cfg.test_size
  rng = np.random.default_rng([cfg.seed, SPLIT_STREAMS[split]])
  data = sample(rng, n, cfg.d_v, cfg.p_hat)
  if cfg.missing_prob > 0:
    prob = cfg.missing_prob if split == "train" else 0.0
    missing = np.random.default_rng([cfg.seed, SPLIT_STREAMS[split], 1]).random((3, n, 1)) < prob
    data = {k: with_missingness(data[k], missing[i]) for i, k in enumerate(MODALITIES)}
  return data


def with_missingness(x_NxV: np.ndarray, missing_Nx1: np.ndarray) -> np.ndarray:
  """Missing rows become 0.5 everywhere; a last column holds the 0/1 missingness indicator."""
  x_NxV = np.where(missing_Nx1, np.float32(0.5), x_NxV)
  return np.concatenate([x_NxV, missing_Nx1.astype(np.float32)], axis=1)


def train_iterator(
  cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
):
  return pipeline.ArrayIterator(
    load(cfg, "train"), batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
  )


def eval_arrays(cfg: ml_collections.ConfigDict, split: str = "test") -> Mapping[str, np.ndarray]:
  return load(cfg, split)


def binary_codes(d_v: int) -> np.ndarray:
  """All 2^{d_v} binary vectors, (2^{d_v}, d_v) int8: the candidates of zero-shot retrieval."""
  return np.array(list(itertools.product((0, 1), repeat=d_v)), dtype=np.int8)


def exact_joint(d_v: int, p_hat: float) -> dict[tuple[bytes, bytes, bytes], float]:
  """{(a, b, c) as bytes: probability}, by enumerating (a, b, i) through `xor_tuple`."""
  codes = binary_codes(d_v)
  joint: dict[tuple[bytes, bytes, bytes], float] = {}
  for a, b in itertools.product(codes, codes):
    for switch, p_switch in ((True, p_hat), (False, 1.0 - p_hat)):
      if p_switch == 0.0:
        continue
      c = xor_tuple(a, b, np.asarray(switch))
      key = (a.tobytes(), b.tobytes(), c.tobytes())
      joint[key] = joint.get(key, 0.0) + p_switch / 4.0**d_v
  return joint


def _marginal(joint: Mapping, axes: tuple[int, ...]) -> dict:
  out: dict = {}
  for key, p in joint.items():
    sub = tuple(key[i] for i in axes)
    out[sub] = out.get(sub, 0.0) + p
  return out


def entropy_bits(joint: Mapping, axes: tuple[int, ...]) -> float:
  """H of the variables `axes` (0 = a, 1 = b, 2 = c) under `joint`, in bits."""
  return -sum(p * math.log2(p) for p in _marginal(joint, axes).values() if p > 0)


def information_bits(d_v: int, p_hat: float) -> dict[str, float]:
  """I(a; b), I(b; c), I(a; c), I(b; a, c) and the total correlation TC(a, b, c), in bits."""
  joint = exact_joint(d_v, p_hat)
  h = {axes: entropy_bits(joint, axes) for axes in ((0,), (1,), (2,), (0, 1), (1, 2), (0, 2))}
  h_abc = entropy_bits(joint, (0, 1, 2))
  return {
    "I(a;b)": h[(0,)] + h[(1,)] - h[(0, 1)],
    "I(b;c)": h[(1,)] + h[(2,)] - h[(1, 2)],
    "I(a;c)": h[(0,)] + h[(2,)] - h[(0, 2)],
    "I(b;a,c)": h[(1,)] + h[(0, 2)] - h_abc,
    "TC": h[(0,)] + h[(1,)] + h[(2,)] - h_abc,
  }


def bayes_accuracy_exact(d_v: int, p_hat: float) -> float:
  """Accuracy of the Bayes rule for b given (a, c): sum over (a, c) of max_b p(a, b, c)."""
  best: dict[tuple[bytes, bytes], float] = {}
  for (a, _, c), p in exact_joint(d_v, p_hat).items():
    best[(a, c)] = max(best.get((a, c), 0.0), p)
  return sum(best.values())


def bayes_accuracy(d_v: int, p_hat: float) -> float:
  """The closed form 2^{-d_v} + p_hat (1 - 2^{-d_v}): predict b = a XOR c when c != a, else
  b = 0 (section 5 of the method's derivation; equal to `bayes_accuracy_exact`)."""
  chance = 2.0**-d_v
  return chance + p_hat * (1.0 - chance)
