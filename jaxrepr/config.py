"""The config schema every experiment shares, its validation, and name -> module lookups.

An experiment file `configs/<name>.py` defines `get_config(arg=None)` and starts from
`base_config()`. The trainer calls `validate(config)` before it builds anything, so a typo or a bad
value stops the run with the offending field named, not after minutes of compilation.

Shared fields:
  method            name of a package in jaxrepr.methods
  seed              root of every random number in the run
  seeds, sweep      several runs trained as one program (jaxrepr/replicas.py)
  data.name         name of a module in jaxrepr.data (the training data)
  model             owned by the method
  train.steps, train.batch_size (global), train.grad_accum (micro-batches per step),
  train.budget (a compute budget that sets train.steps, jaxrepr/budget.py),
  train.log_every, train.checkpoint_every, train.keep_checkpoints
  optim             see jaxrepr/optim.py
  evals             {name: {kind: module in jaxrepr.evaluators, every: steps (0 = only at the end),
                    ...}}
  num_devices       use only the first n devices (placeholder: all of them)
  cpu_devices       JAX devices a CPU host is split into: 'auto' (one per core) or a count
  compilation_cache_dir  JAX's persistent compilation cache ('auto': the user's cache dir; '' or
                    'none': off)
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from jaxrepr import cpu_layout, optim, replicas
from jaxrepr.errors import ConfigError, MissingFileError
from jaxrepr.methods import base as method_contract

# Re-exported: the names predate jaxrepr/nn/precision.py and jaxrepr/registry.py.
from jaxrepr.nn.precision import PRECISIONS, compute_dtype  # noqa: F401
from jaxrepr.registry import data_module, lookup, method_module  # noqa: F401


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  # Several runs as one program (jaxrepr/replicas.py): `seeds` trains one replica per seed
  # (--config.seeds=0,1,2; empty: the one run of `seed`), `sweep` a grid of fields
  # ('optim.lr=1e-3,3e-4;optim.weight_decay=0,1e-4'), each replica in <workdir>/[<point>/]s<seed>.
  c.seeds = ()
  c.sweep = ""
  c.data = ml_collections.ConfigDict(dict(name=""))
  c.model = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict(
    dict(
      steps=1000,
      batch_size=128,
      grad_accum=1,
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
    )
  )
  # A compute budget that sets train.steps: kind 'steps' | 'examples' | 'flops' | 'seconds' |
  # 'steps_of' (value steps of the config `reference`, a --config spec such as
  # 'configs/noprop.py:backprop', in FLOPs) (jaxrepr/budget.py); the default (steps, 0) trains
  # train.steps.
  c.train.budget = ml_collections.ConfigDict(dict(kind="steps", value=0.0, reference=""))
  c.optim = optim.default_config()
  c.evals = ml_collections.ConfigDict()
  c.num_devices = config_dict.placeholder(int)
  # CPU hosts only: split the CPU into this many JAX devices, one data-parallel replica each, or
  # 'auto': one per physical core where every batch divides (the rule and its exceptions, such as
  # accelerator hosts: jaxrepr/cpu_layout.py; measured by launch/bench.py --suite=layouts).
  # Applied by launch/train.py, bench.py and eval.py before JAX starts, which print the choice
  # (jaxrepr.parallel.apply_cpu_layout); a direct train.run_experiment call uses the devices JAX
  # already has. An int or 'auto', so the field's type is `object`.
  c.cpu_devices = config_dict.FieldReference(cpu_layout.AUTO, field_type=object)
  # Linux/glibc: restart the launcher once with malloc using transparent huge pages for its large
  # blocks (jaxrepr/host_memory.py), so that a CPU step does not page-fault its buffers in 4 KiB
  # pages anew every step. Applied by the same launchers as soon as their flags are parsed.
  c.malloc_huge_pages = True
  # Compiled programs are kept on disk here (JAX's persistent compilation cache) and read back by
  # any later compile of the same program: a rerun, a resume, the evaluators of every replica of a
  # multi-seed run. Only programs that took >= 1 s to compile are written (JAX's threshold, so that
  # small ops do not fill the disk). 'auto': the user's cache, $XDG_CACHE_HOME/jaxrepr/xla, else
  # ~/.cache/jaxrepr/xla, resolved on each host (so that config.json names no home directory);
  # '' or 'none' turns it off. Applied by launch/train.py and eval.py before the first compile
  # (jaxrepr.parallel.apply_compilation_cache), which print it in one line.
  c.compilation_cache_dir = "auto"
  # Mesh (data x fsdp): fsdp > 1 shards every parameter / optimizer-state leaf of at least
  # sharding.fsdp_min_bytes along its largest axis divisible by fsdp (see jaxrepr/parallel.py).
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1))
  c.sharding = ml_collections.ConfigDict(dict(fsdp_min_bytes=2**20))
  # Compute dtype of the models: 'float32' or 'bfloat16' (mixed precision: parameters, optimizer
  # state, softmax, normalisation statistics and losses stay float32).
  c.precision = "float32"
  # jax.profiler trace of `profile_steps` steps from step `profile_start` (after compilation),
  # written to <workdir>/tensorboard/plugins/profile/ (TensorBoard) and as a Perfetto trace.
  c.profile_steps = 0
  c.profile_start = 5
  return c


def evaluator_class(name: str, eval_cfg: ml_collections.ConfigDict) -> type:
  """The `Evaluator` of `config.evals.<name>.kind` (contract: jaxrepr/evaluators/__init__.py).
  Here rather than in jaxrepr/registry.py, which the evaluators import."""
  module = lookup("evaluators", eval_cfg.kind, f"config.evals.{name}.kind", "Evaluator")
  return module.Evaluator


def _require(ok: bool, field: str, value, rule: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={value!r}: {rule}")


# jaxrepr/budget.py resolves them
BUDGET_KINDS = ("steps", "examples", "flops", "seconds", "steps_of")


def _check_budget(config: ml_collections.ConfigDict) -> None:
  b = config.train.get("budget")
  if b is None:
    return
  _require(b.kind in BUDGET_KINDS, "train.budget.kind", b.kind, f"must be one of {BUDGET_KINDS}")
  _require(
    b.value > 0 or (b.kind == "steps" and b.value == 0),
    "train.budget.value",
    b.value,
    f"must be > 0 for a budget in {b.kind} (steps: 0 trains train.steps)",
  )
  reference = b.get("reference", "")
  if b.kind == "steps_of":
    _require(
      bool(reference),
      "train.budget.reference",
      reference,
      "must name the config whose steps a 'steps_of' budget counts, as --config names it "
      "(e.g. 'configs/noprop.py:backprop')",
    )
  else:
    _require(
      not reference,
      "train.budget.reference",
      reference,
      f"is read only by train.budget.kind='steps_of' (the kind is {b.kind!r})",
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the shared fields; raises ValueError naming the first bad one."""
  for section in base_config():  # what validate() and the trainer read without a fallback
    if section not in config:
      raise ConfigError(
        f"config.{section} is missing; start configs from jaxrepr.config.base_config()"
      )
  method_module(config)
  data_module(config)
  t, o = config.train, config.optim
  _require(isinstance(config.seed, int), "seed", config.seed, "must be an integer")
  replicas.check(config)
  _check_budget(config)
  _require(t.steps > 0, "train.steps", t.steps, "must be > 0")
  _require(t.batch_size > 0, "train.batch_size", t.batch_size, "must be > 0")
  _require(t.grad_accum >= 1, "train.grad_accum", t.grad_accum, "must be >= 1")
  _require(
    t.batch_size % t.grad_accum == 0,
    "train.grad_accum",
    t.grad_accum,
    f"must divide train.batch_size={t.batch_size}",
  )
  _require(t.log_every > 0, "train.log_every", t.log_every, "must be > 0")
  _require(
    t.checkpoint_every >= 0,
    "train.checkpoint_every",
    t.checkpoint_every,
    "must be >= 0 (0 saves only at the end)",
  )
  _require(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, "must be >= 1")
  _require(o.name in optim.OPTIMIZERS, "optim.name", o.name, f"must be one of {optim.OPTIMIZERS}")
  _require(
    o.schedule in optim.SCHEDULES, "optim.schedule", o.schedule, f"must be one of {optim.SCHEDULES}"
  )
  _require(o.lr > 0, "optim.lr", o.lr, "must be > 0")
  _require(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "must be >= 0")
  decay_at = tuple(o.decay_at)
  _require(
    all(isinstance(b, int) and b > 0 for b in decay_at)
    and all(a < b for a, b in zip(decay_at, decay_at[1:])),
    "optim.decay_at",
    decay_at,
    "must be strictly increasing positive step numbers",
  )
  _require(o.decay_factor > 0, "optim.decay_factor", o.decay_factor, "must be > 0")
  _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
  _require(o.clip_norm >= 0, "optim.clip_norm", o.clip_norm, "must be >= 0 (0 disables clipping)")
  _require(0 <= o.b1 < 1, "optim.b1", o.b1, "must be in [0, 1)")
  _require(0 <= o.b2 < 1, "optim.b2", o.b2, "must be in [0, 1)")
  _require(
    cpu_layout.is_valid(config.cpu_devices), "cpu_devices", config.cpu_devices, cpu_layout.RULE
  )
  _require(
    config.profile_steps >= 0,
    "profile_steps",
    config.profile_steps,
    "must be >= 0 (0 disables profiling)",
  )
  _require(config.profile_start >= 0, "profile_start", config.profile_start, "must be >= 0")
  _require(
    config.precision in PRECISIONS, "precision", config.precision, f"must be one of {PRECISIONS}"
  )
  supported = method_contract.supported_precisions(method_module(config))
  _require(
    config.precision in supported,
    "precision",
    config.precision,
    f"method {config.method!r} supports {supported}",
  )
  _require(config.mesh.fsdp >= 1, "mesh.fsdp", config.mesh.fsdp, "must be >= 1")
  _require(
    config.sharding.fsdp_min_bytes >= 0,
    "sharding.fsdp_min_bytes",
    config.sharding.fsdp_min_bytes,
    "must be >= 0",
  )
  if config.num_devices is not None:
    _require(config.num_devices >= 1, "num_devices", config.num_devices, "must be >= 1")
  for name, ev in config.evals.items():
    _require("kind" in ev, f"evals.{name}", ev, "needs a 'kind' (a module of jaxrepr.evaluators)")
    evaluator_class(name, ev)
    _require(ev.get("every", 0) >= 0, f"evals.{name}.every", ev.get("every"), "must be >= 0")


def config_name(config_path: str) -> str:
  """'configs/lpn.py:arc,tiny' -> 'lpn_arc_tiny': a stable run name for the default workdir."""
  path, _, arg = config_path.partition(":")
  stem = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py")
  return "_".join([stem] + [a for a in arg.replace(",", " ").split() if a])


def load_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path`, as `--config=path:arg` loads it (used by
  configs that specialise another one, and by tests)."""
  stem = os.path.basename(path).removesuffix(".py")
  spec = importlib.util.spec_from_file_location(f"jaxrepr_config_{stem}", path)
  if spec is None or not os.path.exists(path):
    raise MissingFileError(f"no config file {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def load_spec(spec: str) -> ml_collections.ConfigDict:
  """The config a `--config=path:arg` flag loads, from the string 'path:arg' (or 'path')."""
  path, _, arg = spec.partition(":")
  return load_file(path, arg or None)
