"""Synthetic set tasks of the Set Transformer paper (Lee et al., ICML 2019), generated in pure JAX.

* Mixture of Gaussians (paper §5.3, supp. §2.3; reference run.py): per set, pi ~ Dirichlet(1_K),
  labels ~ Cat(pi) i.i.d., mu_k ~ U(-mu_range, mu_range)^D, x = mu_label + sigma * eps with one
  isotropic sigma = 0.3 (the reference code's values: the paper's formulas are not legible in the
  available copy). K = 4, D = 2. The true parameters come back for the oracle log-likelihood (paper
  Table 3: oracle -1.4726 per data point).
* Max regression (paper §5.1, supp. §2.1): n ~ U{1..10}, x_i ~ U[0, 100] (real), target max_i x_i.
  The reference notebook instead draws integers 1..99 (`integer=True`) and one length per batch
  (`size_per='batch'`).

Sets are padded to `max_size` with a boolean mask of valid elements, so one compiled program serves
every size in [min_size, max_size]. `size_per='batch'` draws one size per global batch, as run.py and
the notebook do; `size_per='example'` draws one per set.

Generation happens on device, inside the loss. The host iterator only yields global example ids
(`{'example_id': int32 (local_batch,)}`, id = k * batch_size + j for row j of global batch k, each
process taking its contiguous slice). Example `i` is generated from
`fold_in(fold_in(key(seed), 0), i)`, its size from `fold_in(fold_in(key(seed), 1), i)`, or with
`size_per='batch'` from `fold_in(fold_in(key(seed), 1), min_id // global_batch_size)`: it depends only on (seed, example id, global batch size), never on the
device or process count, the step's RNG or a resume. Evaluation ids start at `EVAL_ID_OFFSET`, so
evaluation sets are never training sets.

Data config fields (`config.data`), see `default_config`:
  name: 'sets'; task: 'mog' | 'max'; min_size, max_size (inclusive; max_size is the padded length);
  size_per: 'batch' | 'example'; seed: placeholder(int), the generation seed (default: config.seed);
  mog: num_components, dim, sigma, mu_range; max: low, high, integer.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrepr.data import pipeline
from jaxrepr.errors import ConfigError

TASKS = ("mog", "max")
EVAL_ID_OFFSET = 2**30


def default_config(task: str = "mog") -> ml_collections.ConfigDict:
  """The reference code's generator settings for `task` ('mog': run.py; 'max': the paper §5.1)."""
  if task not in TASKS:
    raise ConfigError(f"config.data.task must be one of {TASKS}, got {task!r}")
  cfg = ml_collections.ConfigDict()
  cfg.name = "sets"
  cfg.task = task
  cfg.seed = ml_collections.config_dict.placeholder(int)
  if task == "mog":
    cfg.min_size, cfg.max_size = 300, 599  # run.py: np.random.randint(300, 600), one per step
    cfg.size_per = "batch"
    cfg.num_components = 4
    cfg.dim = 2
    cfg.sigma = 0.3
    cfg.mu_range = 4.0
  else:
    cfg.min_size, cfg.max_size = 1, 10  # paper §5.1: n ~ U{1..10}
    cfg.size_per = "example"
    cfg.low, cfg.high = 0.0, 100.0
    cfg.integer = False  # the notebook: integers randint(1, 100), i.e. 1..99
  return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad `config.data` field."""
  if cfg.task not in TASKS:
    raise ConfigError(f"config.data.task must be one of {TASKS}, got {cfg.task!r}")
  if not 1 <= cfg.min_size <= cfg.max_size:
    raise ConfigError(f"config.data.min_size={cfg.min_size} and max_size={cfg.max_size} must "
                      "satisfy 1 <= min_size <= max_size")
  if cfg.size_per not in ("batch", "example"):
    raise ConfigError(f"config.data.size_per must be 'batch' or 'example', got {cfg.size_per!r}")
  if cfg.task == "mog" and (cfg.sigma <= 0 or cfg.num_components < 1):
    raise ConfigError("config.data.sigma must be > 0 and config.data.num_components >= 1")
  if cfg.task == "max" and not cfg.low < cfg.high:
    raise ConfigError(f"config.data.low={cfg.low} must be below config.data.high={cfg.high}")


def sample_mog(key: jax.Array, size: jax.Array, *, max_size: int, num_components: int = 4,
               dim: int = 2, sigma: float = 0.3, mu_range: float = 4.0) -> dict[str, jax.Array]:
  """One padded MoG set with `size` valid points (a traced int is fine).

  Returns x (max_size, dim) zero at padding, mask (max_size,) bool, labels (max_size,) int32,
  pi (K,), mu (K, dim), sigma (K, dim).
  """
  k_pi, k_lab, k_mu, k_eps = jax.random.split(key, 4)
  # Dirichlet(1_K) as normalised Exp(1) draws: the same distribution, without the gamma
  # sampler's rejection loop (which dominates compile time)
  e_K = jax.random.exponential(k_pi, (num_components,), jnp.float32)
  pi_K = e_K / jnp.sum(e_K)
  labels_N = jax.random.categorical(k_lab, jnp.log(pi_K), shape=(max_size,)).astype(jnp.int32)
  mu_KxD = jax.random.uniform(k_mu, (num_components, dim), jnp.float32, -mu_range, mu_range)
  eps_NxD = jax.random.normal(k_eps, (max_size, dim), jnp.float32)
  mask_N = jnp.arange(max_size) < size
  x_NxD = jnp.where(mask_N[:, None], mu_KxD[labels_N] + sigma * eps_NxD, 0.0)
  return {"x": x_NxD, "mask": mask_N, "labels": labels_N, "pi": pi_K, "mu": mu_KxD,
          "sigma": jnp.full((num_components, dim), sigma, jnp.float32)}


def sample_max(key: jax.Array, size: jax.Array, *, max_size: int, low: float = 0.0,
               high: float = 100.0, integer: bool = False) -> dict[str, jax.Array]:
  """One padded max-regression set: x (max_size, 1) zero at padding, mask (max_size,), y () = max."""
  if integer:  # the notebook's np.random.randint(1, 100)
    x_N = jax.random.randint(key, (max_size,), 1, 100).astype(jnp.float32)
  else:
    x_N = jax.random.uniform(key, (max_size,), jnp.float32, low, high)
  mask_N = jnp.arange(max_size) < size
  x_N = jnp.where(mask_N, x_N, 0.0)
  y = jnp.max(jnp.where(mask_N, x_N, -jnp.inf))
  return {"x": x_N[:, None], "mask": mask_N, "y": y}


def generation_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The root key of the data stream: `config.data.seed`, or `config.seed` when unset."""
  seed = config.data.get("seed", None)
  if seed is None:
    seed = config.get("seed", 0)
  return jax.random.key(seed)


def _sizes(cfg: ml_collections.ConfigDict, root: jax.Array, example_id_B: jax.Array) -> jax.Array:
  size_root = jax.random.fold_in(root, 1)
  batch_size = example_id_B.shape[0]  # global under jit: the same on one device or many
  if cfg.size_per == "batch":  # one unit per batch, from its first (smallest) id, whatever the
    # offset; a reduction rather than a slice, so it also works on a batch-sharded array
    # (zeros_like keeps the batch's sharding, which vmap below requires)
    unit_B = jnp.zeros_like(example_id_B) + jnp.min(example_id_B) // batch_size
  else:
    unit_B = example_id_B
  keys_B = jax.vmap(lambda i: jax.random.fold_in(size_root, i))(unit_B)
  return jax.vmap(lambda k: jax.random.randint(k, (), cfg.min_size, cfg.max_size + 1))(keys_B)


def generate(cfg: ml_collections.ConfigDict, root: jax.Array,
             example_id_B: jax.Array) -> dict[str, jax.Array]:
  """The padded sets with the given global ids (jittable; see the module docstring for the keys)."""
  example_root = jax.random.fold_in(root, 0)
  keys_B = jax.vmap(lambda i: jax.random.fold_in(example_root, i))(example_id_B)
  sizes_B = _sizes(cfg, root, example_id_B)
  if cfg.task == "mog":
    fn = lambda k, n: sample_mog(k, n, max_size=cfg.max_size, num_components=cfg.num_components,
                                 dim=cfg.dim, sigma=cfg.sigma, mu_range=cfg.mu_range)
  elif cfg.task == "max":
    fn = lambda k, n: sample_max(k, n, max_size=cfg.max_size, low=cfg.low, high=cfg.high,
                                 integer=cfg.integer)
  else:
    raise ConfigError(f"config.data.task must be one of {TASKS}, got {cfg.task!r}")
  return jax.vmap(fn)(keys_B, sizes_B)


class ExampleIdIterator(Iterator[pipeline.HostBatch]):
  """Yields {'example_id': int32 (local_batch,)}: ids k*batch_size + j of global batch k, this
  process's contiguous slice of rows. Checkpointable through get_state/set_state."""

  def __init__(self, batch_size: int, *, shard_index: int = 0, shard_count: int = 1,
               offset: int = 0):
    self._batch_size = batch_size
    self._rows = pipeline.local_slice(batch_size, shard_index, shard_count)
    self._offset = offset
    self._step = 0

  def __next__(self) -> pipeline.HostBatch:
    start = self._offset + self._step * self._batch_size
    if start + self._batch_size > np.iinfo(np.int32).max:
      raise StopIteration  # int32 example ids exhausted (over two billion examples)
    self._step += 1
    ids = np.arange(start, start + self._batch_size, dtype=np.int32)
    return {"example_id": ids[self._rows]}

  def get_state(self) -> dict:
    return {"step": self._step}

  def set_state(self, state: Mapping) -> None:
    self._step = int(state["step"])


def train_iterator(cfg: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                   shard_index: int = 0, shard_count: int = 1) -> ExampleIdIterator:
  """Training example ids. `seed` is unused here: the data seed enters on device (`generation_key`)."""
  del seed
  validate(cfg)
  return ExampleIdIterator(batch_size, shard_index=shard_index, shard_count=shard_count)


def eval_batches(cfg: ml_collections.ConfigDict, *, num_batches: int, batch_size: int,
                 shard_index: int = 0, shard_count: int = 1) -> list[pipeline.HostBatch]:
  """A fixed evaluation set (the reference benchmark: 100 batches of 10 sets), ids from
  EVAL_ID_OFFSET so it never overlaps training."""
  validate(cfg)
  it = ExampleIdIterator(batch_size, shard_index=shard_index, shard_count=shard_count,
                         offset=EVAL_ID_OFFSET)
  return [next(it) for _ in range(num_batches)]
