"""Deterministic, checkpointable batch iterators for host-local numpy data.

Two sources cover every method:

* `ArrayIterator`: in-memory arrays, reshuffled each epoch with a permutation that depends only on
  (seed, epoch). Each process takes its contiguous slice of every global batch, so the global batch
  is the same whatever the number of processes.
* `GeneratorIterator`: procedural data. Example `j` of global batch `k` is
  `make_example(np.random.default_rng([seed, k, j]))`, so, again, the global batch does not depend
  on how many processes share it.

Both expose `get_state()` (a small JSON-serialisable dict) and `set_state(state)`; the checkpoint
stores that dict next to the train state, so a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from jaxrepr.errors import DataError

Example = Mapping[str, np.ndarray]
HostBatch = dict[str, np.ndarray]


def local_slice(global_batch_size: int, shard_index: int, shard_count: int) -> slice:
  """The rows of a global batch that process `shard_index` of `shard_count` loads."""
  if global_batch_size % shard_count:
    raise DataError(
      f"global batch size {global_batch_size} does not divide by the process count {shard_count}"
    )
  per = global_batch_size // shard_count
  return slice(shard_index * per, (shard_index + 1) * per)


def stack_examples(examples: list[Example]) -> HostBatch:
  """Stacks a list of example dicts (same keys, same shapes) into one batch dict."""
  keys = examples[0].keys()
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in keys}


class ArrayIterator(Iterator[HostBatch]):
  """Epoch-shuffled batches of in-memory arrays; drops the incomplete last batch of an epoch."""

  def __init__(
    self,
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
  ):
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise DataError(f"arrays have different leading sizes: {sizes}")
    self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
    self._n = next(iter(sizes.values()))
    if batch_size > self._n:
      raise DataError(f"batch size {batch_size} exceeds the number of examples {self._n}")
    self._batch_size = batch_size
    self._seed = seed
    self._shuffle = shuffle
    self._rows = local_slice(batch_size, shard_index, shard_count)
    self._batches_per_epoch = self._n // batch_size
    self._step = 0
    self._order_epoch = -1
    self._order = np.arange(self._n)

  def _order_for(self, epoch: int) -> np.ndarray:
    if epoch != self._order_epoch:
      self._order_epoch = epoch
      self._order = (
        np.random.default_rng([self._seed, epoch]).permutation(self._n)
        if self._shuffle
        else np.arange(self._n)
      )
    return self._order

  def __next__(self) -> HostBatch:
    epoch, k = divmod(self._step, self._batches_per_epoch)
    global_idx = self._order_for(epoch)[k * self._batch_size : (k + 1) * self._batch_size]
    idx = global_idx[self._rows]
    self._step += 1
    return {name: a[idx] for name, a in self._arrays.items()}

  def get_state(self) -> dict:
    return {"step": self._step}

  def set_state(self, state: Mapping) -> None:
    self._step = int(state["step"])


class GeneratorIterator(Iterator[HostBatch]):
  """Batches of procedurally generated examples; example j of batch k depends on (seed, k, j)."""

  def __init__(
    self,
    make_example: Callable[[np.random.Generator], Example],
    batch_size: int,
    *,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
  ):
    self._make_example = make_example
    self._batch_size = batch_size
    self._seed = seed
    self._rows = range(batch_size)[local_slice(batch_size, shard_index, shard_count)]
    self._step = 0

  def __next__(self) -> HostBatch:
    k = self._step
    self._step += 1
    return stack_examples(
      [self._make_example(np.random.default_rng([self._seed, k, j])) for j in self._rows]
    )

  def get_state(self) -> dict:
    return {"step": self._step}

  def set_state(self, state: Mapping) -> None:
    self._step = int(state["step"])


def eval_batches(
  arrays: Mapping[str, np.ndarray], batch_size: int, *, shard_index: int = 0, shard_count: int = 1
) -> Iterator[HostBatch]:
  """One pass over a finite set in order, padding the last batch; `mask` marks real rows.

  Every batch has the same shape, so an evaluator compiles once.
  """
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  n = len(next(iter(arrays.values())))
  rows = local_slice(batch_size, shard_index, shard_count)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = idx < n
    idx = np.where(mask, idx, 0)[rows]
    batch = {k: a[idx] for k, a in arrays.items()}
    batch["mask"] = mask[rows].astype(np.float32)
    yield batch
