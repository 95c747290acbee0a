"""Devices, meshes and the host-to-device boundary.

The mesh has two axes, `data` x `fsdp`, spanning every device of every process (`fsdp` = 1 by
default, i.e. pure data parallelism). Batches are sharded along their leading axis over both axes
(`P(('data', 'fsdp'))`). Parameters and optimizer state are replicated (`P()`), except that with
`config.mesh.fsdp` > 1 every leaf of at least `config.sharding.fsdp_min_bytes` is split along its
largest axis divisible by the fsdp size (fully sharded data parallelism, `fsdp_shardings`); XLA
inserts the all-gathers and reduce-scatters. Host-local numpy batches become global `jax.Array`s
in exactly one place, `to_global`.

Multi-process runs (several GPU hosts, a TPU pod slice, or two local CPU processes in the tests)
use JAX's own runtime: `initialize_distributed` calls `jax.distributed.initialize`, which reads the
coordinator from SLURM / TPU environment variables or takes it explicitly.
"""

from __future__ import annotations

import os
from typing import Any
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrepr import cpu_layout
from jaxrepr.errors import ConfigError

# The axis names are shared with the building blocks (nn/ imports no trainer module).
from jaxrepr.nn.mesh_axes import BATCH_AXES, DATA_AXIS, FSDP_AXIS  # noqa: F401 - re-exported


def initialize_distributed(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
  """Starts the multi-controller runtime when this process is one of several.

  Explicit arguments win; otherwise JAX's cluster auto-detection (SLURM, TPU VM, Open MPI, ...)
  runs when `JAXREPR_DISTRIBUTED=1` or a known scheduler variable is present. A single local
  process does nothing, so the common case needs no flags.
  """
  if coordinator is not None:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator needs --num_processes and --process_id as well")
    # CPU collectives across processes need gloo (the default CPU client is single-process). The
    # setting only concerns the CPU client, so it is harmless on GPU/TPU hosts; it must be set
    # before any backend starts, hence no device query here.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return
  if multi_process_requested(None):
    jax.distributed.initialize()


def multi_process_requested(coordinator: str | None, env: Mapping[str, str] | None = None) -> bool:
  """Whether `initialize_distributed` will start the multi-controller runtime: a coordinator was
  given, or `JAXREPR_DISTRIBUTED=1`, a SLURM job of several tasks or a multi-host TPU VM."""
  env = os.environ if env is None else env
  return coordinator is not None or (
    env.get("JAXREPR_DISTRIBUTED") == "1"
    or int(env.get("SLURM_NTASKS", "1")) > 1
    or "TPU_WORKER_HOSTNAMES" in env
    and "," in env["TPU_WORKER_HOSTNAMES"]
  )


def set_cpu_devices(count: int | None) -> None:
  """Splits the host CPU into `count` JAX devices; None leaves JAX's default (one device).

  XLA's CPU client runs one program per device. With one device per core, each core runs its own
  replica of the data-parallel step, which suits steps made of many small ops better than one
  device that splits each op over the cores (XLA's CPU dot library runs the small batched
  matmuls of LPN's blocked attention on one thread). `config.cpu_devices='auto'`, the default,
  picks the count by the rule of jaxrepr/cpu_layout.py (one per core where every batch divides),
  measured in both layouts by `launch/bench.py --suite=layouts` (docs/benchmarks.md). It concerns
  only the CPU client, so it changes nothing on GPU or TPU hosts. Call it before anything runs on
  a JAX backend (the launchers do, first thing, through `apply_cpu_layout`).
  """
  if count is None:
    return
  if count < 1:
    raise ConfigError(f"config.cpu_devices must be >= 1, got {count}")
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as e:
    raise RuntimeError(
      f"config.cpu_devices={count} must be set before JAX starts its backends "
      f"(launch/train.py, bench.py and eval.py do so first thing): {e}"
    ) from e


def apply_cpu_layout(
  config: Any, multi_process: bool, evaluator_lookup: cpu_layout.EvaluatorLookup | None = None
) -> cpu_layout.Layout:
  """Resolves `config.cpu_devices` ('auto' or a count) on this host and sets the CPU device count;
  returns the layout, whose `line()` the launchers print once. The launchers pass
  jaxrepr/config.py's `evaluator_class` as `evaluator_lookup`, so that 'auto' counts the default
  batch size of an evaluator whose config sets none (cpu_layout.batch_sizes)."""
  layout = cpu_layout.resolve(config, cpu_layout.host_facts(multi_process), evaluator_lookup)
  set_cpu_devices(layout.count)
  return layout


COMPILATION_CACHE_OFF = ("", "none")  # values of config.compilation_cache_dir that turn it off


def default_compilation_cache_dir(env: Mapping[str, str] | None = None) -> str:
  """$XDG_CACHE_HOME/jaxrepr/xla, else ~/.cache/jaxrepr/xla: where `config.compilation_cache_dir`
  'auto' (the default) points."""
  env = os.environ if env is None else env
  base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxrepr", "xla")


def apply_compilation_cache(config: Any) -> str:
  """Points JAX's persistent compilation cache at `config.compilation_cache_dir` ('auto': the
  user's cache, `default_compilation_cache_dir`; '' or 'none': off) and returns the line the
  launchers print, 'compilation cache: <dir>' or '... off'.

  A program compiled once is then read from disk by every later compile of the same program: in a
  rerun or a resume of the same config, and within one run where each replica of a multi-seed run
  builds its own evaluators, whose identical jitted programs would otherwise compile once per
  replica. JAX's threshold stays: only programs that took at least
  `jax_persistent_cache_min_compile_time_secs` (1 s) to compile are written, so that the many small
  eager ops do not fill the disk with entries that compile about as fast as they load.
  In a multi-process run every process reads the directory and only process 0 writes it (JAX's
  rule), so a directory on a shared filesystem serves all hosts. Call it before the first compile
  (the launchers do, through `apply_process_settings`); a direct `train.run_experiment` call uses
  whatever cache JAX has.
  """
  path = str(config.compilation_cache_dir)
  if path == "auto":
    path = default_compilation_cache_dir()
  if path.strip().lower() in COMPILATION_CACHE_OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return "compilation cache: off"
  path = os.path.expanduser(path)
  try:  # a directory this process cannot write leaves the cache off, said in the line
    if path.startswith("~"):
      raise OSError("no home directory to expand '~' in")
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise OSError("not writable")
  except OSError as e:
    jax.config.update("jax_compilation_cache_dir", None)
    return f"compilation cache: off ({path}: {e.strerror or e})"
  jax.config.update("jax_compilation_cache_dir", path)
  return f"compilation cache: {path}"


def apply_process_settings(
  config: Any, multi_process: bool, evaluator_lookup: cpu_layout.EvaluatorLookup | None = None
) -> list[str]:
  """What launch/train.py and launch/eval.py set before JAX compiles anything: the CPU device
  layout (`apply_cpu_layout`) and the compilation cache (`apply_compilation_cache`); returns the
  line each prints on stderr."""
  layout = apply_cpu_layout(config, multi_process, evaluator_lookup)
  return [layout.line(), apply_compilation_cache(config)]


def make_mesh(num_devices: int | None = None, fsdp: int = 1) -> jax.sharding.Mesh:
  """A (`data`, `fsdp`) mesh over all devices (or the first `num_devices`, for tests)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"asked for {num_devices} devices, only {len(devices)} are visible")
    devices = devices[:num_devices]
  if fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {len(devices)} devices")
  return jax.make_mesh(
    (len(devices) // fsdp, fsdp),
    BATCH_AXES,
    axis_types=(jax.sharding.AxisType.Auto,) * 2,
    devices=devices,
  )


def batch_sharding(mesh: jax.sharding.Mesh, replica_axis: bool = False) -> NamedSharding:
  """Rows over every device; with `replica_axis`, a leading axis of replicas (jaxrepr/replicas.py)
  is kept whole on every device and the rows of each replica are spread as usual."""
  return NamedSharding(mesh, P(None, BATCH_AXES) if replica_axis else P(BATCH_AXES))


def with_replica_axis(shardings: Any) -> Any:
  """Shardings of one replica's leaves -> those of the stacked leaves (replica axis unsharded)."""
  return jax.tree.map(lambda s: NamedSharding(s.mesh, P(None, *s.spec)), shardings)


def fsdp_spec(shape: tuple[int, ...], itemsize: int, fsdp: int, min_bytes: int) -> P:
  """P() for small leaves; otherwise the largest axis divisible by `fsdp` goes to the fsdp axis."""
  if fsdp == 1 or int(np.prod(shape)) * itemsize < min_bytes:
    return P()
  candidates = [(dim, i) for i, dim in enumerate(shape) if dim % fsdp == 0]
  if not candidates:
    return P()
  axis = max(candidates)[1]
  return P(*([None] * axis + [FSDP_AXIS]))


def fsdp_shardings(abstract_tree: Any, mesh: jax.sharding.Mesh, min_bytes: int) -> Any:
  """A NamedSharding per leaf of a pytree of shapes (parameters, optimizer state) by `fsdp_spec`."""
  fsdp = mesh.shape[FSDP_AXIS]
  return jax.tree.map(
    lambda x: NamedSharding(
      mesh, fsdp_spec(tuple(x.shape), np.dtype(x.dtype).itemsize, fsdp, min_bytes)
    ),
    abstract_tree,
  )


def bytes_per_device(tree: Any) -> int:
  """Bytes of a pytree of arrays held by one device (the first addressable shard of each leaf)."""
  return int(
    sum(
      x.addressable_shards[0].data.nbytes
      for x in jax.tree.leaves(tree)
      if hasattr(x, "addressable_shards")
    )
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh, field: str) -> None:
  """Refuses, before anything compiles, a global batch that the devices cannot share evenly."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(
      f"{field}={global_batch_size} does not divide by the {n} devices of the mesh; "
      f"use a multiple of {n} (for example {max(n, global_batch_size // n * n)})"
    )
  if global_batch_size % jax.process_count():
    raise ValueError(
      f"{field}={global_batch_size} does not divide by the {jax.process_count()} processes"
    )


def to_global(
  host_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh, replica_axis: bool = False
) -> dict[str, jax.Array]:
  """Host-local rows of a batch -> one global array per field, sharded on `P('data')` (rows are
  axis 1 behind a leading replica axis with `replica_axis`).

  Each process passes only its own rows (the data iterators slice by process); JAX assembles them.
  """
  sharding = batch_sharding(mesh, replica_axis)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in host_batch.items()
  }


def fetch(tree: Any) -> Any:
  """A pytree of arrays -> numpy, whole, on every process.

  Replicated or fully addressable arrays are copied; arrays whose shards live on other processes
  (FSDP parameters in a multi-process run) are all-gathered first.
  """
  from jax.experimental import multihost_utils

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)
