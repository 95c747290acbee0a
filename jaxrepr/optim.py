"""Optax optimizers and learning-rate schedules from `config.optim`.

Fields (all validated by `jaxrepr.config.validate` before anything compiles):
  name: 'adam' | 'adamw' | 'sgd'
  lr: peak learning rate (> 0)
  schedule: 'constant' | 'warmup_constant' | 'warmup_cosine' | 'step'
  decay_at, decay_factor: 'step' only: lr times decay_factor at each step in decay_at (run.py of the
    Set Transformer: lr 1e-3, times 0.1 at step 25k); 'constant' and 'step' have no warm-up
  warmup_steps: linear warm-up from `warmup_init_fraction * lr` to `lr`
  warmup_init_fraction: start of the warm-up as a fraction of lr (LPN's reference code: 0.01)
  end_lr_fraction: final lr of the cosine decay as a fraction of lr
  weight_decay: decoupled weight decay (adamw; for sgd/adam it is added to the gradient)
  b1, b2, eps: Adam moments; momentum for sgd is b1 (0 disables it)
  clip_norm: global-norm gradient clipping (0 disables it)

Gradient accumulation is not an optax wrapper here: `config.train.grad_accum` splits each step's
batch into micro-batches inside the jitted step (see `jaxrepr/train_step.py`), so one optimizer
step is still one trainer step, and checkpoints, schedules and logs count the same steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
import optax

from jaxrepr.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_constant", "warmup_cosine", "step")


def schedule(
  cfg: ml_collections.ConfigDict, total_steps: int, hparams: Mapping[str, Any] | None = None
) -> optax.Schedule:
  """The learning rate at each step; a swept `lr` in `hparams` (a traced value inside a replica
  step, jaxrepr/replicas.py) scales the schedule of lr = 1 (every schedule is linear in lr)."""
  if hparams and "lr" in hparams:
    base = _schedule(cfg, 1.0, total_steps)
    lr = hparams["lr"]
    return lambda step: lr * base(step)
  return _schedule(cfg, cfg.lr, total_steps)


def _schedule(cfg: ml_collections.ConfigDict, lr: float, total_steps: int) -> optax.Schedule:
  warmup = int(cfg.warmup_steps)
  init = lr * cfg.warmup_init_fraction
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "warmup_constant":
    return optax.join_schedules(
      [optax.linear_schedule(init, lr, max(warmup, 1)), optax.constant_schedule(lr)], [warmup]
    )
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=init,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=lr * cfg.end_lr_fraction,
    )
  if cfg.schedule == "step":
    # piecewise_constant_schedule multiplies by the scale once the step passes each boundary
    return optax.piecewise_constant_schedule(
      lr, {int(b): float(cfg.decay_factor) for b in cfg.decay_at}
    )
  raise ConfigError(f"config.optim.schedule={cfg.schedule!r} is not one of {SCHEDULES}")


def make_optimizer(
  cfg: ml_collections.ConfigDict, total_steps: int, hparams: Mapping[str, Any] | None = None
) -> optax.GradientTransformation:
  """The optimizer of `cfg`; `hparams` overrides fields by name ('lr', 'weight_decay', 'b1', 'b2',
  'eps', 'clip_norm') with values that may be traced (one replica's values inside the replica
  step, jaxrepr/replicas.py). A swept field keeps the optimizer's structure the same for every
  value, so that all replicas share one optimizer-state layout: a swept weight decay always adds
  the decay term (0 adds nothing), a swept clip_norm always clips."""
  h = dict(hparams or {})
  lr = schedule(cfg, total_steps, h)
  wd = h.get("weight_decay", cfg.weight_decay)
  decays = "weight_decay" in h or bool(cfg.weight_decay)
  b1, b2, eps = h.get("b1", cfg.b1), h.get("b2", cfg.b2), h.get("eps", cfg.eps)
  if cfg.name == "adamw":
    opt = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd)
  elif cfg.name == "adam":
    opt = optax.chain(
      optax.add_decayed_weights(wd) if decays else optax.identity(),
      optax.adam(lr, b1=b1, b2=b2, eps=eps),
    )
  elif cfg.name == "sgd":
    if "b1" in h:
      raise ConfigError("config.sweep: optim.b1 (sgd's momentum) changes the optimizer's state")
    opt = optax.chain(
      optax.add_decayed_weights(wd) if decays else optax.identity(),
      optax.sgd(lr, momentum=cfg.b1 or None),
    )
  else:
    raise ConfigError(f"config.optim.name={cfg.name!r} is not one of {OPTIMIZERS}")
  if "clip_norm" in h or cfg.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(h.get("clip_norm", cfg.clip_norm)), opt)
  return opt


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      name="adamw",
      lr=1e-3,
      schedule="warmup_cosine",
      warmup_steps=100,
      warmup_init_fraction=0.0,
      end_lr_fraction=0.0,
      decay_at=(),
      decay_factor=0.1,
      weight_decay=1e-4,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      clip_norm=1.0,
    )
  )
