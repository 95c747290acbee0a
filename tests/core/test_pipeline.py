"""Data iterators: deterministic, exactly resumable, independent of the process count."""

import numpy as np
import pytest

from jaxrepr.data import pipeline


def _arrays(n=50):
  return {"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "y": np.arange(n)}


def _take(it, k):
  return [next(it) for _ in range(k)]


def test_array_iterator_is_deterministic_and_covers_each_epoch():
  a = pipeline.ArrayIterator(_arrays(), 10, seed=3)
  b = pipeline.ArrayIterator(_arrays(), 10, seed=3)
  batches_a, batches_b = _take(a, 10), _take(b, 10)
  for u, v in zip(batches_a, batches_b):
    np.testing.assert_array_equal(u["y"], v["y"])
  epoch0 = np.concatenate([b["y"] for b in batches_a[:5]])
  epoch1 = np.concatenate([b["y"] for b in batches_a[5:]])
  assert sorted(epoch0) == list(range(50)) and sorted(epoch1) == list(range(50))
  assert not np.array_equal(epoch0, epoch1)  # reshuffled per epoch


@pytest.mark.parametrize(
  "make",
  [
    lambda: pipeline.ArrayIterator(_arrays(), 10, seed=1),
    lambda: pipeline.GeneratorIterator(lambda r: {"v": r.normal(size=2)}, 4, seed=1),
  ],
)
def test_resume_from_state_gives_the_same_batches(make):
  full = _take(make(), 9)
  it = make()
  _take(it, 4)
  state = it.get_state()
  resumed = make()
  resumed.set_state(state)
  for u, v in zip(full[4:], _take(resumed, 5)):
    for k in u:
      np.testing.assert_array_equal(u[k], v[k])


@pytest.mark.parametrize(
  "make",
  [
    lambda i, n: pipeline.ArrayIterator(_arrays(), 8, seed=2, shard_index=i, shard_count=n),
    lambda i, n: pipeline.GeneratorIterator(
      lambda r: {"v": r.integers(0, 99, 3)}, 8, seed=2, shard_index=i, shard_count=n
    ),
  ],
)
def test_global_batch_does_not_depend_on_process_count(make):
  whole = _take(make(0, 1), 3)
  shards = [_take(make(i, 2), 3) for i in range(2)]
  for k in range(3):
    for key in whole[k]:
      np.testing.assert_array_equal(
        whole[k][key], np.concatenate([shards[0][k][key], shards[1][k][key]])
      )


def test_eval_batches_pad_and_mask():
  batches = list(pipeline.eval_batches(_arrays(13), 8))
  assert [b["x"].shape[0] for b in batches] == [8, 8]
  assert batches[1]["mask"].sum() == 5
  np.testing.assert_array_equal(batches[1]["y"][:5], np.arange(8, 13))


def test_errors_are_clear():
  with pytest.raises(ValueError, match="does not divide by the process count"):
    pipeline.ArrayIterator(_arrays(), 10, seed=0, shard_count=3)
  with pytest.raises(ValueError, match="different leading sizes"):
    pipeline.ArrayIterator({"a": np.zeros(3), "b": np.zeros(4)}, 2, seed=0)
