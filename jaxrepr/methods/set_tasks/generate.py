"""The synthetic set tasks of the Set Transformer paper (Lee et al., ICML 2019), made on device.

* Mixture of Gaussians (paper §5.3, supp. §2.3; reference run.py): per set, pi ~ Dirichlet(1_K),
  labels ~ Cat(pi) i.i.d., mu_k ~ U(-mu_range, mu_range)^D, x = mu_label + sigma * eps with one
  isotropic sigma = 0.3 (the reference code's values: the paper's formulas are not legible in the
  available copy). K = 4, D = 2. The true parameters come back for the oracle log-likelihood (paper
  Table 3: oracle -1.4726 per data point).
* Max regression (paper §5.1, supp. §2.1): n ~ U{1..10}, x_i ~ U[0, 100] (real), target max_i x_i.
  The reference notebook instead draws integers 1..99 (`integer=True`) and one length per batch
  (`size_per='batch'`).

Sets are padded to `max_size` with a boolean mask of valid elements, so one compiled program serves
every size in [min_size, max_size]. `size_per='batch'` draws one size per global batch, as run.py
and the notebook do; `size_per='example'` draws one per set.

The method generates the sets inside its loss and predict from the global example ids that the host
iterator of jaxrepr/data/sets.py yields. Example `i` is generated from
`fold_in(fold_in(root, 0), i)`, its size from `fold_in(fold_in(root, 1), i)`, or with
`size_per='batch'` from `fold_in(fold_in(root, 1), min_id // global_batch_size)`, where `root` is
`jaxrepr.methods.base.generation_key(config)`: a set depends only on (seed, example id, global
batch size), never on the device or process count, the step's RNG or a resume.

The generator's parameters are `config.data` fields (defaults: `jaxrepr.data.sets.default_config`):
task, min_size, max_size, size_per; mog: num_components, dim, sigma, mu_range; max: low, high,
integer. `validate` checks them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxrepr.errors import ConfigError

TASKS = ("mog", "max")


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the bad `config.data` field."""
  if cfg.task not in TASKS:
    raise ConfigError(f"config.data.task must be one of {TASKS}, got {cfg.task!r}")
  if not 1 <= cfg.min_size <= cfg.max_size:
    raise ConfigError(
      f"config.data.min_size={cfg.min_size} and max_size={cfg.max_size} must "
      "satisfy 1 <= min_size <= max_size"
    )
  if cfg.size_per not in ("batch", "example"):
    raise ConfigError(f"config.data.size_per must be 'batch' or 'example', got {cfg.size_per!r}")
  if cfg.task == "mog" and (cfg.sigma <= 0 or cfg.num_components < 1):
    raise ConfigError("config.data.sigma must be > 0 and config.data.num_components >= 1")
  if cfg.task == "max" and not cfg.low < cfg.high:
    raise ConfigError(f"config.data.low={cfg.low} must be below config.data.high={cfg.high}")


def sample_mog(
  key: jax.Array,
  size: jax.Array,
  *,
  max_size: int,
  num_components: int = 4,
  dim: int = 2,
  sigma: float = 0.3,
  mu_range: float = 4.0,
) -> dict[str, jax.Array]:
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
  return {
    "x": x_NxD,
    "mask": mask_N,
    "labels": labels_N,
    "pi": pi_K,
    "mu": mu_KxD,
    "sigma": jnp.full((num_components, dim), sigma, jnp.float32),
  }


def sample_max(
  key: jax.Array,
  size: jax.Array,
  *,
  max_size: int,
  low: float = 0.0,
  high: float = 100.0,
  integer: bool = False,
) -> dict[str, jax.Array]:
  """One padded max-regression set: x (max_size, 1) zero at padding, mask (max_size,),
  y () = max."""
  if integer:  # the notebook's np.random.randint(1, 100)
    x_N = jax.random.randint(key, (max_size,), 1, 100).astype(jnp.float32)
  else:
    x_N = jax.random.uniform(key, (max_size,), jnp.float32, low, high)
  mask_N = jnp.arange(max_size) < size
  x_N = jnp.where(mask_N, x_N, 0.0)
  y = jnp.max(jnp.where(mask_N, x_N, -jnp.inf))
  return {"x": x_N[:, None], "mask": mask_N, "y": y}


def sizes(cfg: ml_collections.ConfigDict, root: jax.Array, example_id_B: jax.Array) -> jax.Array:
  """The number of valid elements of each set (module docstring for the keys)."""
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


def generate(
  cfg: ml_collections.ConfigDict, root: jax.Array, example_id_B: jax.Array
) -> dict[str, jax.Array]:
  """The padded sets with the given global ids (jittable; see the module docstring for the keys)."""
  example_root = jax.random.fold_in(root, 0)
  keys_B = jax.vmap(lambda i: jax.random.fold_in(example_root, i))(example_id_B)
  sizes_B = sizes(cfg, root, example_id_B)
  if cfg.task == "mog":
    fn = lambda k, n: sample_mog(
      k,
      n,
      max_size=cfg.max_size,
      num_components=cfg.num_components,
      dim=cfg.dim,
      sigma=cfg.sigma,
      mu_range=cfg.mu_range,
    )
  elif cfg.task == "max":
    fn = lambda k, n: sample_max(
      k, n, max_size=cfg.max_size, low=cfg.low, high=cfg.high, integer=cfg.integer
    )
  else:
    raise ConfigError(f"config.data.task must be one of {TASKS}, got {cfg.task!r}")
  return jax.vmap(fn)(keys_B, sizes_B)
