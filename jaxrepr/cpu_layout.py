"""How many JAX devices a CPU host is split into: `config.cpu_devices`, 'auto' by default.

XLA's CPU device count is fixed when JAX starts its backends, so the launchers decide it first
thing, from the config and a few facts about the host, and cannot time the compiled step in both
layouts (that would take a subprocess per layout). They follow a rule instead, checked against
`launch/bench.py --suite=layouts`, which times every benched config in both layouts
(docs/benchmarks.md, "Device layout on CPU hosts"): on the 2-core development CPUs the LPN steps,
the main workloads, run faster with one device per core than with one device for both cores (XLA's
CPU dot library runs the small matmuls of a step on one thread, so a single device leaves a core
idle in them; one device per core runs one data-parallel replica on each). No other config was
slower with two devices in both rounds except the set-clustering step in one loaded sitting, which
was faster with two devices in a quiet one, so the rule has no exclusions.

`resolve` is the rule, a pure function of the config and the host facts; `host_facts` reads them.
'auto' gives:
  * JAX's default (one CPU device) where the CPU client does not run the step: an accelerator
    platform is named by JAX_PLATFORMS or installed as a JAX plugin; where the device count is
    set already (XLA_FLAGS' --xla_force_host_platform_device_count, which the tests use); and in
    a multi-process run, whose processes already share out the host;
  * `config.num_devices` devices when that is set (the mesh uses exactly that many);
  * otherwise one device per physical core available to the process (its CPU affinity, hyperthread
    siblings counted once, a cgroup CPU quota as a cap), lowered to the largest count that every
    global batch of the config divides by (train.batch_size, the micro-batch under grad_accum,
    each evaluator's batch_size, its class's default where the config sets none:
    `parallel.check_batch_size` refuses the others) and that is a multiple of `config.mesh.fsdp`
    (the mesh is data x fsdp).
An integer is used as given.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import math
import os
from collections.abc import Callable, Mapping

from jaxrepr.errors import ConfigError

AUTO = "auto"
RULE = "must be >= 1 or 'auto' (one JAX device per CPU core, chosen by the launcher)"
# Name prefixes of the distributions that give JAX a GPU or TPU platform (jax[cuda12], jax[rocm],
# jax[tpu]: jax-cuda12-plugin, jax-rocm7-plugin, libtpu, ...).
ACCELERATOR_PLUGINS = ("jax-cuda", "jax-rocm", "libtpu")
_FORCED_COUNT_FLAG = "--xla_force_host_platform_device_count"
# (name, config.evals.<name>) -> the evaluator's class: jaxrepr/config.py's evaluator_class
EvaluatorLookup = Callable[[str, Mapping], type]


@dataclasses.dataclass(frozen=True)
class HostFacts:
  """What the rule needs to know about the host (read by `host_facts`, given by tests)."""

  cores: int  # physical cores this process may run on
  accelerator: str | None = None  # why the step runs off the CPU, None when it runs on it
  forced_count: int | None = None  # a device count XLA_FLAGS sets already
  multi_process: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
  count: int | None  # JAX CPU devices to create; None leaves JAX's default
  reason: str

  def line(self) -> str:
    """The one line the launchers print, e.g. 'cpu devices: 2 (auto: one per core; ...)'."""
    count = "JAX's default" if self.count is None else self.count
    return f"cpu devices: {count} ({self.reason})"


def is_valid(value) -> bool:
  return value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def check(value) -> None:
  if not is_valid(value):
    raise ConfigError(f"config.cpu_devices={value!r}: {RULE}")


def constructor_default(cls: type, field: str):
  """The default of keyword `field` of `cls`'s constructor; None where it has none."""
  param = inspect.signature(cls).parameters.get(field)
  return None if param is None or param.default is inspect.Parameter.empty else param.default


def batch_sizes(config, evaluator_lookup: EvaluatorLookup | None = None) -> dict[str, int]:
  """Every global batch of the config that the mesh must split evenly, by field name.

  An evaluator's batch is what its constructor receives (jaxrepr/run_build.py passes every field
  of `config.evals.<name>` but kind and every): its `batch_size` field, or where the config leaves
  that out, the constructor's default. Reading the default needs the evaluator's class, which
  `evaluator_lookup` gives (jaxrepr/config.py's `evaluator_class`, (name, eval config) -> class):
  the caller hands it in because the evaluators import this module (through parallel.py), so a
  lookup of theirs made here would be an import cycle. Without it only the batch sizes the config
  sets count."""
  t = config.train
  sizes = {"train.batch_size": int(t.batch_size)}
  if t.get("grad_accum", 1) > 1:
    sizes["train.batch_size / train.grad_accum"] = int(t.batch_size) // int(t.grad_accum)
  for name, ev in config.get("evals", {}).items():
    if "batch_size" in ev:
      size = ev.batch_size
    elif evaluator_lookup is not None:
      size = constructor_default(evaluator_lookup(name, ev), "batch_size")
    else:
      size = None
    if size is not None:
      sizes[f"evals.{name}.batch_size"] = int(size)
  return sizes


def resolve(config, host: HostFacts, evaluator_lookup: EvaluatorLookup | None = None) -> Layout:
  """The device count for `config.cpu_devices` on `host`, with the reason in words
  (`evaluator_lookup`: see `batch_sizes`)."""
  value = config.cpu_devices
  check(value)
  if value != AUTO:
    return Layout(value, f"config.cpu_devices={value}")
  if host.accelerator:
    return Layout(None, f"auto: {host.accelerator}, the CPU does not run the step")
  if host.forced_count is not None:
    return Layout(None, f"auto: XLA_FLAGS sets {host.forced_count} devices")
  if host.multi_process:
    return Layout(None, "auto: a multi-process run, one device per process")
  if config.get("num_devices") is not None:
    return Layout(config.num_devices, f"auto: config.num_devices={config.num_devices}")
  fsdp = int(config.mesh.fsdp) if "mesh" in config else 1
  sizes = batch_sizes(config, evaluator_lookup)
  # fsdp devices at the least, even beyond the cores: the mesh cannot be smaller.
  candidates = range(fsdp, max(host.cores, fsdp) + 1, fsdp)
  fits = [n for n in candidates if all(size % n == 0 for size in sizes.values())]
  cores = f"{host.cores} core{'s' if host.cores > 1 else ''}"
  if not fits:  # the trainer then names the batch that does not divide
    return Layout(fsdp, f"auto: config.mesh.fsdp={fsdp}")
  count = max(fits)
  if count == host.cores:
    return Layout(count, f"auto: one per core of {cores}; every batch size divides by {count}")
  blocking = [f"{k}={v}" for k, v in sizes.items() if v % host.cores]
  why = ", ".join(blocking) if blocking and count < host.cores else f"config.mesh.fsdp={fsdp}"
  return Layout(count, f"auto: {cores}, lowered to {count} by {why}")


def physical_cores(
  cpus: set[int] | None = None, sysfs: str = "/sys/devices/system/cpu", cgroup_root="/sys/fs/cgroup"
) -> int:
  """Physical cores among the logical CPUs this process may run on (its affinity mask):
  hyperthread siblings share a (package, core) id and count once; a cgroup v2 CPU quota
  (`cpu.max`, containers) caps the count. Falls back to the logical CPUs where sysfs is missing."""
  cpus = set(os.sched_getaffinity(0)) if cpus is None else cpus
  cores = set()
  for cpu in cpus:
    topology = os.path.join(sysfs, f"cpu{cpu}", "topology")
    try:
      with open(os.path.join(topology, "physical_package_id")) as f:
        package = f.read().strip()
      with open(os.path.join(topology, "core_id")) as f:
        cores.add((package, f.read().strip()))
    except OSError:
      cores.add(("cpu", str(cpu)))
  count = max(len(cores), 1)
  try:
    with open(os.path.join(cgroup_root, "cpu.max")) as f:
      quota, period = f.read().split()[:2]
    if quota != "max":
      count = min(count, max(1, math.ceil(int(quota) / int(period))))
  except (OSError, ValueError):
    pass
  return count


def accelerator(env: Mapping[str, str], installed: set[str] | None = None) -> str | None:
  """Why JAX will run the step off the CPU (JAX_PLATFORMS, or an installed accelerator plugin),
  None when it runs on the CPU. JAX picks the platform when it starts, too late to decide here."""
  platforms = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return None if platforms[0] == "cpu" else f"JAX_PLATFORMS={env['JAX_PLATFORMS']}"
  if installed is None:
    installed = {
      (d.metadata["Name"] or "").lower().replace("_", "-")
      for d in importlib.metadata.distributions()
    }
  found = sorted(n for n in installed if n.startswith(ACCELERATOR_PLUGINS))
  return f"{found[0]} is installed" if found else None


def forced_count(env: Mapping[str, str]) -> int | None:
  """The device count XLA_FLAGS forces on the CPU client, None when it sets none."""
  for flag in env.get("XLA_FLAGS", "").split():
    name, _, value = flag.partition("=")
    if name == _FORCED_COUNT_FLAG and value.isdigit():
      return int(value)
  return None


def host_facts(multi_process: bool, env: Mapping[str, str] | None = None) -> HostFacts:
  env = os.environ if env is None else env
  return HostFacts(physical_cores(), accelerator(env), forced_count(env), multi_process)
