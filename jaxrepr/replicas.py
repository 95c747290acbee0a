"""Several training runs as one program: seeds and hyperparameter points trained as replicas.

    --config.seeds=0,1,2
    --config.sweep='optim.lr=1e-3,3e-4;optim.weight_decay=0,1e-4'

`config.seeds` lists the seeds to train (empty: the one run of `config.seed`); `config.sweep` is a
grid, `;` between fields and `,` between the values of one field. Every (point, seed) pair is a
replica: the parameters and optimizer state of all replicas are stacked on a leading axis and one
jitted step, the single-run step under `jax.vmap`, trains them together (as purejaxrl trains many
seeds). Replica r equals, to float rounding, the single run of its seed and point: its own
initialisation, training and evaluation keys (`jax.random.key(seed)` split as in a single run), its
own data order (the data iterator of its seed) and its own hyperparameters.

Swept inside the program (they change values, not shapes): the optimizer fields of `IN_PROGRAM`
(the optimizer is rebuilt inside the step from each replica's values) and the loss coefficients
the method declares in its package's `SWEEPABLE` (jaxrepr/methods/base.py; e.g. NoProp's
`model.eta`, ConVIRT's `model.convirt_lambda`), which the step passes to the method's
`swept_loss` as each replica's traced scalar instead of the config's constant. Any other field (a
width, a depth, a data setting, a coefficient the method does not declare) changes the program:
each of its values is trained as a program of its own, one after the other, with the same layout
on disk.

Layout: the workdir holds the program's `checkpoints/` (one Orbax checkpoint with every replica)
and `config.json`; each replica writes its own run directory, `<workdir>/s<seed>/` or
`<workdir>/<point>/s<seed>/` (metrics.jsonl, tensorboard/, config.json: the config of the single
run it equals), so that launch/summarize_runs.py and launch/plot_runs.py read replicas as runs.
A point is named `field=value,field=value` in the sweep's order.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import itertools
from typing import Any

import ml_collections
import numpy as np

from jaxrepr import registry
from jaxrepr.errors import ConfigError
from jaxrepr.methods import base as method_contract

# Optimizer fields that the trainer can vary per replica inside one program (jaxrepr/optim.py
# builds the optimizer from each replica's values inside the step).
IN_PROGRAM = (
  "optim.lr",
  "optim.weight_decay",
  "optim.b1",
  "optim.b2",
  "optim.eps",
  "optim.clip_norm",
)


@dataclasses.dataclass(frozen=True)
class Replica:
  name: str  # its run directory under the workdir: 's0' or 'optim.lr=0.001/s0'
  seed: int
  point: dict[str, Any]  # in-program field (optimizer or loss coefficient) -> this replica's value
  config: ml_collections.ConfigDict  # the single run this replica equals


def _value(text: str) -> Any:
  text = text.strip()
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word: a string value


def parse_sweep(text: str) -> list[tuple[str, tuple]]:
  """'optim.lr=1e-3,3e-4;model.width=64' -> [('optim.lr', (0.001, 0.0003)), ('model.width',
  (64,))]; a malformed or repeated field is an error naming `config.sweep`."""
  fields = []
  for part in (p for p in text.split(";") if p.strip()):
    field, eq, values = part.partition("=")
    field = field.strip()
    if not eq or not field or not values.strip():
      raise ConfigError(
        f"config.sweep={text!r}: {part.strip()!r} is not 'field=value,value,...' "
        "(fields are separated by ';')"
      )
    if field in (f for f, _ in fields):
      raise ConfigError(f"config.sweep={text!r} names {field} twice")
    fields.append((field, tuple(_value(v) for v in _split_values(values) if v.strip())))
  return fields


def _split_values(text: str) -> list[str]:
  """Splits at the commas outside brackets and quotes: '(16, 16),(32,)' -> ['(16, 16)', '(32,)']."""
  parts, depth, quote, current = [], 0, "", ""
  for ch in text:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      parts.append(current)
      current = ""
      continue
    current += ch
  return parts + [current]


def is_replicated(config: ml_collections.ConfigDict) -> bool:
  return bool(tuple(config.get("seeds", ()))) or bool(config.get("sweep", ""))


def point_name(point: dict[str, Any]) -> str:
  """{'optim.lr': 0.001, 'model.hidden': (16, 16)} -> 'optim.lr=0.001,model.hidden=(16,16)'."""
  return ",".join(f"{field}={str(value).replace(' ', '')}" for field, value in point.items())


def _set(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise ConfigError(f"config.sweep names {field}, but config.{field} does not exist")
    node = node[p]
  if leaf not in node:
    raise ConfigError(f"config.sweep names {field}, but config.{field} does not exist")
  if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.sweep: config.{field}={value!r}: {e}") from None


def _with(config: ml_collections.ConfigDict, point: dict[str, Any], **top) -> Any:
  out = copy.deepcopy(config)  # keeps field types, placeholders and references
  with out.unlocked():
    for field, value in point.items():
      _set(out, field, value)
    for k, v in top.items():
      out[k] = v
  return out


def check(config: ml_collections.ConfigDict) -> None:
  """Validates `config.seeds` and `config.sweep` (called by jaxrepr.config.validate)."""
  seeds = tuple(config.seeds)
  if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise ConfigError(f"config.seeds={seeds!r}: must be integers (--config.seeds=0,1,2)")
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f"config.seeds={seeds!r}: a seed is listed twice")
  for field, values in parse_sweep(config.sweep):
    if not values:
      raise ConfigError(f"config.sweep: {field} has no values")
    for v in values:
      _with(config, {field: v})  # an unknown field or a value of the wrong type stops here
    if field == "optim.clip_norm" and min(values) <= 0 and len(values) > 1:
      raise ConfigError(
        "config.sweep: optim.clip_norm values must all be > 0 (0, no clipping, is another "
        "program; sweep it in a separate run)"
      )
  if config.get("stages") is not None and is_replicated(config):
    raise ConfigError(
      "config.seeds / config.sweep train replicas of one trainer run; a multi-stage experiment "
      "(config.stages) runs its stages one by one: run one experiment per seed instead"
    )


def in_program_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields a sweep of `config` varies inside one program: `IN_PROGRAM` and the loss
  coefficients of the method's `SWEEPABLE`."""
  return IN_PROGRAM + method_contract.sweepable_fields(registry.method_module(config))


def programs(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """[(sub-workdir, config)]: one program per point of the fields that change the program ('' and
  the config itself when there are none); each program's `sweep` keeps the in-program fields."""
  sweep = parse_sweep(config.sweep)
  inside = in_program_fields(config) if sweep else IN_PROGRAM
  outer = [(f, v) for f, v in sweep if f not in inside]
  if not outer:
    return [("", config)]
  inner = ";".join(f"{f}=" + ",".join(repr(x) for x in v) for f, v in sweep if f in inside)
  out = []
  for values in itertools.product(*(v for _, v in outer)):
    point = dict(zip((f for f, _ in outer), values))
    out.append((point_name(point), _with(config, point, sweep=inner)))
  return out


def replicas(config: ml_collections.ConfigDict) -> list[Replica]:
  """The replicas of one program (its sweep holds only in-program fields), points major."""
  sweep = parse_sweep(config.sweep)
  inside = in_program_fields(config) if sweep else IN_PROGRAM
  outer = [f for f, _ in sweep if f not in inside]
  if outer:
    raise ConfigError(
      f"config.sweep: {outer} change the program, which trains one program per value in "
      "<workdir>/<field>=<value>; to evaluate one, set the field and give that workdir"
    )
  seeds = tuple(config.seeds) or (config.seed,)
  out = []
  for values in itertools.product(*(v for _, v in sweep)):
    point = dict(zip((f for f, _ in sweep), values))
    for seed in seeds:
      name = f"s{seed}" if not point else f"{point_name(point)}/s{seed}"
      single = _with(config, point, seed=seed, seeds=(), sweep="")
      out.append(Replica(name, seed, point, single))
  return out


def hyperparameters(reps: list[Replica]) -> dict[str, np.ndarray]:
  """{optim field: (R,) float32 values} of the swept optimizer fields (empty for seeds only)."""
  fields = sorted({f for r in reps for f in r.point if f in IN_PROGRAM})
  return {
    f.removeprefix("optim."): np.asarray([r.point[f] for r in reps], np.float32) for f in fields
  }


def coefficients(reps: list[Replica]) -> dict[str, np.ndarray]:
  """{field: (R,) float32 values} of the swept loss coefficients (the method's `SWEEPABLE`
  fields; empty when none is swept): what the replica step passes to `Method.swept_loss`."""
  fields = sorted({f for r in reps for f in r.point if f not in IN_PROGRAM})
  return {f: np.asarray([r.point[f] for r in reps], np.float32) for f in fields}


class StackedIterator:
  """One data iterator per replica (each with its own seed), batches stacked on a leading axis."""

  def __init__(self, iterators: list):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(it) for it in self.iterators]
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}

  def get_state(self) -> dict:
    return {"replicas": [it.get_state() for it in self.iterators]}

  def set_state(self, state: dict) -> None:
    saved = state.get("replicas")
    if saved is None or len(saved) != len(self.iterators):
      raise ConfigError(
        f"the checkpoint's data state holds {len(saved or [])} replicas, the config "
        f"{len(self.iterators)}"
      )
    for it, s in zip(self.iterators, saved):
      it.set_state(s)
