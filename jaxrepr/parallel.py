"""Devices, meshes and the host-to-device boundary.

One mesh axis, `data`, spans every device of every process. Batches are sharded along their
leading axis on `P('data')`; parameters and optimizer state are replicated (`P()`). Host-local
numpy batches become global `jax.Array`s in exactly one place, `to_global`.

Multi-process runs (several GPU hosts, a TPU pod slice, or two local CPU processes in the tests)
use JAX's own runtime: `initialize_distributed` calls `jax.distributed.initialize`, which reads the
coordinator from SLURM / TPU environment variables or takes it explicitly.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
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
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return
  env = os.environ
  multi = (env.get("JAXREPR_DISTRIBUTED") == "1"
           or int(env.get("SLURM_NTASKS", "1")) > 1
           or "TPU_WORKER_HOSTNAMES" in env and "," in env["TPU_WORKER_HOSTNAMES"])
  if multi:
    jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over all devices (or the first `num_devices` of them, for tests)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"asked for {num_devices} devices, only {len(devices)} are visible")
    devices = devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh, field: str) -> None:
  """Refuses, before anything compiles, a global batch that the devices cannot share evenly."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(
        f"{field}={global_batch_size} does not divide by the {n} devices of the mesh; "
        f"use a multiple of {n} (for example {max(n, global_batch_size // n * n)})")
  if global_batch_size % jax.process_count():
    raise ValueError(f"{field}={global_batch_size} does not divide by the "
                     f"{jax.process_count()} processes")


def to_global(host_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Host-local rows of a batch -> one global array per field, sharded on `P('data')`.

  Each process passes only its own rows (the data iterators slice by process); JAX assembles them.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a pytree (parameters, optimizer state) replicated on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def fetch(tree: Any) -> Any:
  """A fully replicated (or fully addressable) pytree of arrays -> numpy, on every process."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
