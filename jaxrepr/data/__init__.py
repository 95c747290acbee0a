"""Data modules: `config.data.name = 'module'` selects `jaxrepr.data.module` (jaxrepr/registry.py).

The contract (everything the trainer and the evaluators know about a data module):

Required:

    train_iterator(cfg, *, batch_size, seed, shard_index=0, shard_count=1) -> iterator
        `cfg` is `config.data`; `batch_size` the global batch; the iterator yields this process's
        rows (`pipeline.local_slice(batch_size, shard_index, shard_count)`) of every global batch
        as a dict of host numpy arrays, and has `get_state() -> dict` (small, JSON-serialisable)
        and `set_state(state)`, which the checkpoint stores so that a resume continues the same
        batches (jaxrepr/data/pipeline.py has iterators that do all this).

Optional module-level hooks (read them through the accessors below, never with hasattr):

    default_config(*args) -> ConfigDict
        the module's `config.data` defaults, with `name` set; config files call it directly.
    eval_arrays(cfg, split) -> {name: array}
        a finite labelled evaluation set (`split`: 'train' | 'test'), e.g. images.py; the
        classifier, noprop and distill evaluators read it.
    eval_set(cfg, num_tasks=None, seed=None, density=None) -> {name: array}
        a fixed generated test set, e.g. pattern.py; the lpn_loo evaluator reads it.

A data module reads files and generates data on the host; it never imports a method or the trainer
(tests/core/test_import_rules.py). Data that a method generates on device from example ids
(sets.py, embeddings.py) comes with a host iterator of ids here and a generator on the method's
side (see jaxrepr/methods/base.py). This file imports no data module: `config.lookup` lists the
package's modules with pkgutil, and a name defined here would shadow a module of the same name.
"""

from __future__ import annotations

from types import ModuleType
from collections.abc import Callable


def eval_arrays_fn(module: ModuleType) -> Callable | None:
  """The data module's `eval_arrays(cfg, split)` hook, or None."""
  return getattr(module, "eval_arrays", None)


def eval_set_fn(module: ModuleType) -> Callable | None:
  """The data module's `eval_set(cfg, num_tasks=None, seed=None, density=None)` hook, or None."""
  return getattr(module, "eval_set", None)
