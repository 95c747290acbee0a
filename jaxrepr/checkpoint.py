"""Checkpoints: one Orbax CheckpointManager for the train state and the data-iterator state.

* Saved together at the same step, so a resumed run continues the same trajectory (data order
  included) as an uninterrupted one.
* Automatic resume from the latest step, with two different failures kept apart:
  - a checkpoint of *another model* (the config changed its structure or shapes) is an error that
    names the first parameter that differs; nothing is restored, trained or written;
  - an *unreadable* checkpoint (half-copied, corrupted) is reported by path and the next older one
    is tried. The trainer (`repair=True`) also moves it to `<workdir>/unreadable_checkpoints/`, so
    that the next save at that step writes it anew and `launch/eval.py` never evaluates an older
    step than the run reports; readers only skip it.
* Saves are synchronous: a write that fails (no space, no permission) raises at once as one
  WorkdirError naming the directory, the operating system's error and the last good step, instead
  of a background thread's traceback after which training would go on without checkpoints.
* `PreemptionGuard` turns SIGTERM (cloud preemption, `kill`) and the first SIGINT (Ctrl-C) into a
  flag the loop polls, so the run saves at the current step and exits cleanly instead of dying
  mid-write; a second SIGINT aborts at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from typing import Any, NamedTuple
from collections.abc import Mapping

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxrepr.errors import WorkdirError

UNREADABLE_DIR = "unreadable_checkpoints"
START_OVER = (
  "To start over, rerun with --overwrite (moves the old workdir aside) or give another --workdir"
)


class Restored(NamedTuple):
  step: int
  state: Any
  data_state: dict


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree: Any) -> dict[str, tuple]:
  """{'params/Dense_0/kernel': shape} for the array leaves of a state or of Orbax's metadata of it
  (both spell attribute, dict and sequence keys the same way here)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    "/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ())) for path, leaf in leaves
  }


def model_mismatch(saved: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
  """Differences between a checkpoint's leaves and the config's, parameters first."""
  out = []
  for name in sorted(set(saved) | set(wanted), key=lambda n: (not n.startswith("params/"), n)):
    if name not in saved:
      out.append(f"{name} {wanted[name]} is not in the checkpoint")
    elif name not in wanted:
      out.append(f"{name} {saved[name]} is in the checkpoint but not in this config's model")
    elif saved[name] != wanted[name]:
      out.append(f"{name} is {saved[name]} in the checkpoint but {wanted[name]} in this config")
  return out


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def _os_error(e: BaseException) -> str | None:
  """The operating-system error behind an exception chain, as 'strerror (file)'. Orbax wraps it in
  its own types, and TensorStore's writes report it only in their message
  (`Failed writing: "<file>": ... [os_error_code='28']`)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno is not None:
      return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    code = re.search(r"os_error_code='?(\d+)", str(e))
    if code:
      where = re.search(r'Failed writing: "([^"]+)"', str(e))
      return os.strerror(int(code.group(1))) + (f" ({where.group(1)})" if where else "")
    if isinstance(e, BaseExceptionGroup):
      for inner in e.exceptions:
        found = _os_error(inner)
        if found is not None:
          return found
    e = e.__cause__ or e.__context__
  return None


@contextlib.contextmanager
def _quiet_failed_writes():
  """A failed write would bury its one-line error: Orbax logs the traceback from its writer threads
  at ERROR level, asyncio may log a write task's unretrieved exception, and TensorStore's remaining
  writes call back into Orbax's closed event loop (each an 'Event loop is closed' traceback through
  sys.unraisablehook). All are held back during the save; if it fails they stay held back for the
  writes still in flight while the run stops. Other unraisable exceptions are passed on."""
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels, previous_hook = [lg.level for lg in loggers], sys.unraisablehook

  def hook(unraisable):
    if not (
      unraisable.exc_type is RuntimeError and "Event loop is closed" in str(unraisable.exc_value)
    ):
      previous_hook(unraisable)

  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  sys.unraisablehook = hook
  yield  # on an exception, the filters stay (see above)
  for lg, level in zip(loggers, levels):
    lg.setLevel(level)
  sys.unraisablehook = previous_hook


class Checkpointer:
  """`read_only` for readers of another run's checkpoints (eval, a teacher): nothing is created,
  moved or written."""

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = epath.Path(directory).absolute()
    self.read_only = read_only
    self.skipped: list[tuple[int, str]] = []  # (step, why) of checkpoints the last restore passed
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only,
      ),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping, force: bool = False) -> None:
    if step in self._manager.all_steps():
      return
    before = self.all_steps()
    try:
      with _quiet_failed_writes():
        self._manager.save(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))
          ),
          force=force,
        )
    except Exception as e:  # noqa: BLE001 - every failure to write ends the run the same way
      why = _os_error(e) or _first_line(e)
      last = f"step {before[-1]}" if before else "none"
      raise WorkdirError(
        f"could not save the checkpoint of step {step} in {self.directory}: {why}; "
        f"last good checkpoint: {last}"
      ) from e

  def _move_unreadable(self, step: int) -> str:
    target = self.directory.parent / UNREADABLE_DIR / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(target.parent, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(target))
    self._manager.reload()
    return str(target)

  def restore_latest(
    self, abstract_state: Any, repair: bool = False, start_over: str = START_OVER
  ) -> Restored | None:
    """The newest checkpoint that restores, or None if none does (or there is none).

    Raises WorkdirError if the newest readable checkpoint holds another model than
    `abstract_state` (its message ends with `start_over`, what the caller can do about it). With
    `repair`, unreadable checkpoints are moved aside (see the module doc).
    """
    self.skipped = []
    wanted = _shapes(abstract_state)
    for step in reversed(self.all_steps()):
      path = self.directory / str(step)
      try:
        metadata = self._manager.item_metadata(step)["state"]
        if metadata is None:  # Orbax reads a missing _METADATA (a half-copied step) as None
          raise FileNotFoundError(f"{path}/state has no metadata (a half-written copy?)")
        saved = _shapes(metadata)
      except Exception as e:  # noqa: BLE001 - no metadata: the checkpoint is unreadable
        saved, error = None, e
      if saved is not None:
        differences = model_mismatch(saved, wanted)
        if differences:
          more = f" (and {len(differences) - 1} more differences)" if len(differences) > 1 else ""
          raise WorkdirError(
            f"{self.directory.parent} holds checkpoints (steps {self.all_steps()}) of another "
            f"model: {differences[0]}{more}. {start_over}"
          )
        try:
          restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
          )
          return Restored(step, restored["state"], dict(restored["data"]))
        except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
          error = e
      why = _first_line(error)
      self.skipped.append((step, why))
      note = "trying an older one"
      if repair and not self.read_only:
        note = f"moved to {self._move_unreadable(step)}; trying an older one"
      print(f"checkpoint {path} could not be restored ({why}); {note}", file=sys.stderr, flush=True)
    return None

  def reload(self) -> None:
    """Re-reads the steps on disk (after another process moved an unreadable one aside)."""
    self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of a pytree of arrays: the target Orbax restores into."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
  )


class PreemptionGuard:
  """Records SIGTERM and a first SIGINT instead of dying; a second SIGINT aborts at once
  (KeyboardInterrupt). Restores the previous handlers on exit. `signal_name` is the signal that
  asked the run to stop."""

  def __init__(self):
    self.requested = False
    self.signal_name = ""
    self._interrupts = 0
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):  # noqa: ARG002 - signal handler signature
    name = signal.Signals(signum).name
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts > 1:
        raise KeyboardInterrupt
    self.requested = True
    self.signal_name = self.signal_name or name
    if signum == signal.SIGINT:
      # os.write: a print here could re-enter a print the main thread is in the middle of.
      os.write(
        2,
        b"\nSIGINT: saving a checkpoint at the current step, then exiting "
        b"(Ctrl-C again aborts at once)\n",
      )

  def __enter__(self) -> PreemptionGuard:
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (e.g. inside some test runners): no handler
        pass
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
