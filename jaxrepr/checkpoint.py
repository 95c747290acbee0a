"""Checkpoints: one Orbax CheckpointManager for the train state and the data-iterator state.

* Saved together at the same step, so a resumed run continues the same trajectory (data order
  included) as an uninterrupted one.
* Automatic resume from the latest step. A checkpoint that fails to restore (a half-copied or
  corrupted directory) is reported by path and the next older one is tried.
* `PreemptionGuard` turns SIGTERM (cloud preemption, `kill`) into a flag the loop polls, so the run
  saves at the current step and exits cleanly instead of dying mid-write.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  def __init__(self, directory: str, keep: int):
    self.directory = epath.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping, force: bool = False) -> None:
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))),
        force=force)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """(step, state, data_state) from the newest checkpoint that restores, or None if none does."""
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return step, restored["state"], dict(restored["data"])
      except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
        path = self.directory / str(step)
        print(f"checkpoint {path} could not be restored ({type(e).__name__}: "
              f"{str(e).splitlines()[0][:300] if str(e) else ''}); trying an older one",
              file=sys.stderr, flush=True)
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a pytree of arrays: the target Orbax restores into."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class PreemptionGuard:
  """Records SIGTERM instead of dying; restores the previous handler on exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):  # noqa: ARG002 - signal handler signature
    self.requested = True

  def __enter__(self) -> "PreemptionGuard":
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. inside some test runners): no handler
      self._previous = None
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
