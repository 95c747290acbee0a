"""A workdir belongs to one run: its lock, and moving an old run aside to start over.

* `acquire(workdir)` / `release(workdir)` take and drop `<workdir>/run.lock`, a JSON file naming the
  holder's pid, host, process start time and command. Only process 0 of a multi-process run takes
  it. A second run on the same workdir stops at once naming the holder. A lock left by a process
  that no longer exists on this host (SIGKILL, a crash, a node reboot that reused the pid) is stale
  and taken over; the process start time tells a reused pid apart. A lock held from another host
  cannot be checked by pid: the holder touches the file every HEARTBEAT_S seconds (`heartbeat`), and
  a lock from another host whose heartbeat stopped STALE_AFTER_S ago is stale (a node that died; a
  requeued cluster job lands on another node). A lock of this very SLURM job (SLURM_JOB_ID) is
  stale at once: a requeued job restarts while its old lock names the node that died. Until then the
  error names the holder and the file to delete if that run is gone. A stale lock is renamed away
  and checked before it is removed, so two runs taking it over at once do not remove each other's
  new lock; a lock file that stays unreadable is stale once its mtime is STALE_AFTER_S old.
  Claiming a workdir that this process already holds is a no-op (multi-stage runs claim the top
  workdir and each stage's), and only the outermost claim releases it.
* `move_aside(workdir)` renames an existing workdir to `<workdir>.<YYYYmmdd-HHMMSS>` (what
  `launch/train.py --overwrite` does), so starting over never deletes a run.

Plain files and os calls: the lock works on local disks and on network file systems that honour
O_EXCL (NFSv3+, gcsfuse).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from jaxrepr.errors import WorkdirError

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def _start_ticks(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None
  where /proc is not available. Together with the pid it names one process for the boot."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  return int(stat.rsplit(")", 1)[1].split()[19])


def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return None


def _this_process() -> dict:
  return {
    "pid": os.getpid(),
    "host": socket.gethostname(),
    "start_ticks": _start_ticks(os.getpid()),
    "boot_id": _boot_id(),
    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    "command": " ".join(getattr(sys, "orig_argv", sys.argv))[:500],
    "slurm_job": os.environ.get("SLURM_JOB_ID"),
  }


def _same_process(a: dict, b: dict) -> bool:
  return all(a.get(k) == b.get(k) for k in ("pid", "host", "start_ticks", "boot_id"))


def _heartbeat_age(workdir: str) -> float:
  try:
    return time.time() - os.stat(os.path.join(workdir, LOCK_NAME)).st_mtime
  except FileNotFoundError:
    return 0.0


def holder_alive(holder: dict, heartbeat_age: float = 0.0) -> bool | None:
  """True/False for a holder on this host, or on another host whose heartbeat stopped; None for
  another host's holder with a recent heartbeat (it cannot be checked from here). A holder of this
  SLURM job (a requeued job starts again, often on another node) is not alive: SLURM runs one
  instance of a job at a time."""
  if "unreadable" in holder:
    return False if heartbeat_age > STALE_AFTER_S else None
  job = os.environ.get("SLURM_JOB_ID")
  if job and holder.get("slurm_job") == job and not _same_process(holder, _this_process()):
    return False
  if holder.get("host") != socket.gethostname():
    return False if heartbeat_age > STALE_AFTER_S else None
  if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
    return False  # the machine rebooted since: no process of that boot is alive
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # alive, owned by another user
  ticks = holder.get("start_ticks")
  return ticks is None or _start_ticks(pid) in (None, ticks)


def read_lock(workdir: str) -> dict | None:
  """The holder recorded in the workdir's lock file, or None if there is none. A file that stays
  unreadable for a second (not a half-written one) reads as {'unreadable': path}."""
  path = os.path.join(workdir, LOCK_NAME)
  for _ in range(10):
    try:
      with open(path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
      if isinstance(holder, dict):
        return holder
    except json.JSONDecodeError:
      pass
    time.sleep(0.1)  # the holder may be between creating and writing the file
  return {"unreadable": path}


def _describe(holder: dict) -> str:
  if "unreadable" in holder:
    return f"an unreadable lock file {holder['unreadable']}"
  return (
    f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')}: "
    f"{holder.get('command', '?')})"
  )


def _try_create(path: str, me: dict) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
  except OSError:
    os.remove(path)  # no half-written lock left behind (a full disk)
    raise
  return True


def _remove_if_still(path: str, holder: dict) -> None:
  """Removes the lock only if it still names `holder`: two runs taking over the same stale lock
  must not remove each other's new one. The file is renamed away first (atomic), checked, and put
  back if it is another run's."""
  aside = f"{path}.{os.getpid()}.{time.monotonic_ns()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  try:
    with open(aside) as f:
      current = json.load(f)
  except (OSError, ValueError):
    current = {"unreadable": path}
  if current != holder and not ("unreadable" in holder and "unreadable" in current):
    with contextlib.suppress(OSError):
      os.rename(aside, path)  # another run's fresh lock: give it back
    return
  with contextlib.suppress(FileNotFoundError):
    os.remove(aside)


def acquire(workdir: str) -> bool:
  """Takes the workdir's lock; True if this call took it, False if this process already held it.
  Raises WorkdirError naming the holder if another live (or uncheckable) process holds it."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create the workdir {workdir}: {e.strerror or e}") from None
  path = os.path.join(workdir, LOCK_NAME)
  me = _this_process()
  for _ in range(3):  # a stale lock removed by us may be re-taken by a racing process first
    try:
      if _try_create(path, me):
        return True
    except OSError as e:
      raise WorkdirError(f"cannot write the lock file {path}: {e.strerror or e}") from None
    holder = read_lock(workdir)
    if holder is None:
      continue  # released in between
    if _same_process(holder, me):
      return False
    age = _heartbeat_age(workdir)
    alive = holder_alive(holder, age)
    if alive is False:
      print(
        f"{workdir}: removing the stale lock of {_describe(holder)}, which is no longer "
        f"running (last heartbeat {age:.0f} s ago)",
        file=sys.stderr,
        flush=True,
      )
      _remove_if_still(path, holder)
      continue
    hint = (
      "wait for it to finish or stop it"
      if alive
      else f"its last heartbeat was {age:.0f} s ago; if that run has ended, delete {path} (or "
      f"wait: after {STALE_AFTER_S:.0f} s without a heartbeat the lock counts as stale)"
    )
    raise WorkdirError(
      f"{workdir} is in use by {_describe(holder)}; {hint}, or give this run another --workdir"
    )
  raise WorkdirError(f"{path}: could not take the lock (another process keeps taking it)")


def release(workdir: str) -> None:
  """Removes the lock if this process holds it."""
  holder = read_lock(workdir)
  if holder is not None and _same_process(holder, _this_process()):
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(workdir, LOCK_NAME))


@contextlib.contextmanager
def heartbeat(workdir: str, every: float = HEARTBEAT_S):
  """Touches the lock file every `every` seconds while the block runs (a daemon thread), so that
  other hosts can tell a live holder from one whose node died."""
  path = os.path.join(workdir, LOCK_NAME)
  stop = threading.Event()

  def beat():
    while not stop.wait(every):
      with contextlib.suppress(OSError):
        os.utime(path)

  thread = threading.Thread(target=beat, name="workdir-heartbeat", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()


def move_aside(workdir: str) -> str | None:
  """Renames an existing, non-empty workdir to `<workdir>.<timestamp>` and returns the new path
  (None if there was nothing to move). Refuses while a live run holds it."""
  workdir = os.path.normpath(workdir)
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    return None
  holder = read_lock(workdir)
  if holder is not None:
    alive = holder_alive(holder, _heartbeat_age(workdir))
    if alive is not False and not _same_process(holder, _this_process()):
      raise WorkdirError(f"cannot move {workdir} aside: it is in use by {_describe(holder)}")
  stamp = time.strftime("%Y%m%d-%H%M%S")
  target, n = f"{workdir}.{stamp}", 1
  while os.path.exists(target):
    n += 1
    target = f"{workdir}.{stamp}-{n}"
  try:
    os.rename(workdir, target)
  except OSError as e:
    raise WorkdirError(f"cannot move {workdir} to {target}: {e.strerror or e}") from None
  with contextlib.suppress(FileNotFoundError):
    os.remove(os.path.join(target, LOCK_NAME))  # the old run's stale lock: nobody holds it
  return target
