"""Run outputs: metrics.jsonl, TensorBoard events, config.json, progress lines, non-finite guard.

Only process 0 writes files; every process checks for non-finite values (they see the same
replicated scalars) so all of them stop together.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from jaxrepr import provenance
from jaxrepr.errors import DataError, MissingFileError, UserError


class NonFiniteError(UserError, FloatingPointError):
  """A training metric became NaN or infinite."""


def check_finite(step: int, metrics: Mapping[str, float], where: str = "") -> None:
  """`where` names the replica (jaxrepr/replicas.py) whose metrics these are."""
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    name = "loss" if "loss" in bad else sorted(bad)[0]
    of = f" in replica {where}" if where else ""
    raise NonFiniteError(
      f"non-finite {name}={bad[name]} at step {step}{of} (all non-finite metrics: {bad}); "
      "lower config.optim.lr, check the data, or enable config.optim.clip_norm"
    )


def to_floats(metrics: Mapping[str, np.ndarray]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricWriter:
  """Appends {'step': s, name: value, ...} lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # imported only on the writing process

      self._tb = SummaryWriter(self.tb_dir, flush_secs=30)

  def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({prefix + k: float(v) for k, v in scalars.items()})
    with open(self.jsonl_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(prefix + k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _rows(workdir: str) -> list[dict]:
  """The lines of <workdir>/metrics.jsonl in the order written. Errors name a missing file and a
  malformed line; a half-written last line (a run still writing) is ignored."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise MissingFileError(f"{path} does not exist (is {workdir} a run directory?)")
  with open(path) as f:
    lines = f.read().split("\n")
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if number == len(lines):  # no newline yet: the writer is mid-line
        continue
      raise DataError(f"{path}:{number} is not a JSON object: {e}") from None
  return rows


def read_metric(workdir: str, metric: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `metric` in <workdir>/metrics.jsonl in step order (a step logged twice, e.g.
  an evaluation rerun after a resume, keeps the order written, so the last value is the newest).
  Errors name a missing file or metric (listing the metrics the file has) and a malformed line; a
  half-written last line (a run still writing) is ignored."""
  rows = _rows(workdir)
  points = sorted(((r["step"], r[metric]) for r in rows if metric in r), key=lambda p: p[0])
  if not points:
    names = sorted({k for r in rows for k in r if k != "step"})
    path = os.path.join(workdir, "metrics.jsonl")
    raise DataError(f"{path} has no {metric!r}; it has {names}")
  return [p[0] for p in points], [p[1] for p in points]


def train_seconds(workdir: str, log_every: int) -> float:
  """The wall seconds a run spent in its training loop, from its logged step rates: each train
  line's `train/steps_per_second` is the rate since the line before (so it counts compilation,
  checkpoints and the evaluations between, not the final evaluation or the time between a stop
  and a resume).
  A line at or before the step of the line before it (the first after a resume, whose steps since
  the checkpoint are trained again) is taken as `log_every` steps. An estimate where a run was
  stopped between log steps: the first interval after its resume is counted from the last logged
  step, not from the checkpoint it resumed at. Seeds trained as one program each log the program's
  rate, so each seed's time is the whole program's."""
  seconds, last = 0.0, 0
  for row in _rows(workdir):
    rate = row.get("train/steps_per_second")
    if rate is None:
      continue
    steps = row["step"] - last if row["step"] > last else log_every
    seconds += steps / max(rate, 1e-12)
    last = row["step"]
  if last == 0:
    raise DataError(f"{workdir}/metrics.jsonl has no train/steps_per_second: no training logged")
  return seconds


# Keys of config.json that are not config fields: the commit of the code that wrote it
# (launch/summarize_runs.py puts it beside a results table), and what a compute budget measured
# (jaxrepr/budget.py).
NOT_CONFIG = (
  "commit",
  "train.flops_per_step",
  "train.total_flops",
  "train.seconds_per_step",
  "train.reference_flops_per_step",
)
# Fields that say where this host keeps things, not what is trained: a resume that changes them
# (another machine's cache directory) trains the same run.
HOST_ONLY = ("compilation_cache_dir",)


def write_config(
  workdir: str,
  config: ml_collections.ConfigDict,
  measured: Mapping[str, float] | None = None,
  commit: str | None = None,
) -> None:
  """config.json: the config, the commit of the code (`commit`, or asked of git here), and
  `measured` (a resolved budget's FLOPs and seconds per step) in its `train` section."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    saved = json.loads(config.to_json_best_effort())
    saved["commit"] = commit or provenance.commit()
    saved.setdefault("train", {}).update(measured or {})
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(saved, f, indent=2, sort_keys=True)


def config_changes(
  workdir: str, config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict | None = None
) -> list[str]:
  """Fields whose value differs from the config.json an earlier run left in `workdir`, but for
  `HOST_ONLY`; a field the earlier config.json lacks (a field added to the code since) counts as
  unchanged where its value is its default in `defaults` (the base config)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    old = json.load(f)
  new = json.loads(config.to_json_best_effort())

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out

  o, n = flat(old), flat(new)
  for key in NOT_CONFIG + HOST_ONLY:
    o.pop(key, None)
    n.pop(key, None)
  if defaults is not None:
    for key, value in flat(json.loads(defaults.to_json_best_effort())).items():
      if key in n:
        o.setdefault(key, value)
  return sorted(k for k in set(o) | set(n) if o.get(k) != n.get(k))


def duration(seconds: float) -> str:
  """h:mm:ss."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}"


class Progress:
  """One line per report: step, chosen metrics, steps/s over the last interval, ETA.

  Plain lines rather than a redrawn bar, so cluster logs stay readable.
  """

  # Trainer bookkeeping that the progress line leaves to metrics.jsonl / TensorBoard.
  HIDDEN = ("lr", "grad_norm", "update_norm", "param_norm")

  def __init__(self, total_steps: int, start_step: int, stream=None):
    self.total = total_steps
    self.stream = stream or sys.stdout
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self.enabled = jax.process_index() == 0

  def report(self, step: int, metrics: Mapping[str, float], note: str = "") -> float:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    if self.enabled:
      names = ["loss"] + sorted(k for k in metrics if k not in self.HIDDEN and k != "loss")
      shown = " ".join(f"{k}={metrics[k]:.4g}" for k in names if k in metrics)
      eta = duration((self.total - step) / rate) if rate > 0 else "?"
      note = f" ({note})" if note else ""
      print(
        f"step {step}/{self.total} {shown}{note} | {rate:.2f} steps/s | ETA {eta}",
        file=self.stream,
        flush=True,
      )
    return rate
