"""Host memory of CPU runs: let malloc's large blocks use transparent huge pages.

XLA's CPU client allocates the buffers of every execution (activations, gradients, temporaries:
1.36 GiB per device for an LPN pattern step at batch 128 on two CPU devices) with the C library's
`malloc` and frees them when the step ends. glibc serves blocks this large with fresh `mmap`s and
unmaps them on `free`, so every step touches all of its memory for the first time again and the
kernel maps it anew, one 4 KiB page at a time: 712,000 page faults and about 1.1 s of kernel time
per LPN pattern step on a 2-core CPU. glibc's tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35)
makes malloc ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on such blocks: 2 MiB per
fault, about 2,400 faults and 0.15 s of kernel time per step, the Grad 0 and Grad 1 steps 1.1-1.2x
faster (docs/benchmarks.md), peak resident memory unchanged as the memory is still given back
after each step.
(Keeping the freed memory in the process instead, with `mallopt`, removed the faults too but
fragmented the heap under two devices' concurrent allocations: resident memory grew from 3.5 to
6-7 GiB.)

A tunable is read when the process starts, so `restart_with_huge_pages` re-executes the running
command once with it added to GLIBC_TUNABLES. The launchers call it (through `apply`, from
`config.malloc_huge_pages`, on by default) as soon as their flags (and so the config file) are
parsed, before JAX starts a backend; it does nothing when `glibc.malloc.hugetlb` is set already (by
the restart or by the user, either value), when the kernel gives huge pages to every allocation
anyway ("always") or never, off Linux or glibc, and in an interactive session or a script read
from stdin or `-c` (which a restart would lose). Buffers on a GPU or TPU do not go through malloc;
there it only affects host-side memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """The running glibc's (major, minor) version, or None when the C library is not glibc."""
  try:
    name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError):  # not POSIX, no such confstr name, odd version
    return None


def transparent_huge_pages_mode(path: str = _THP_MODE_FILE) -> str | None:
  """The kernel's THP mode ('always', 'madvise' or 'never'), None where it cannot be read."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  # The file lists every mode and brackets the active one: "always [madvise] never".
  start, end = text.find("["), text.find("]")
  return text[start + 1 : end] if 0 <= start < end else None


def _tunable_takes_effect(glibc: tuple[int, int] | None, thp_mode: str | None) -> bool:
  """glibc has the tunable (>= 2.35) and the kernel gives huge pages to advised memory only."""
  return glibc is not None and glibc >= (2, 35) and thp_mode == "madvise"


def huge_pages_environment(
  env: Mapping[str, str], glibc: tuple[int, int] | None, thp_mode: str | None
) -> dict[str, str] | None:
  """The environment to restart with, or None when a restart would change nothing."""
  tunables = env.get("GLIBC_TUNABLES", "")
  if (
    not _tunable_takes_effect(glibc, thp_mode) or HUGETLB_TUNABLE.split("=")[0] + "=" in tunables
  ):  # set already, by us or the user
    return None
  return {**env, "GLIBC_TUNABLES": f"{tunables}:{HUGETLB_TUNABLE}" if tunables else HUGETLB_TUNABLE}


def huge_pages_active() -> bool:
  """Whether this process's large malloc blocks get transparent huge pages."""
  mode = transparent_huge_pages_mode()
  tunable = HUGETLB_TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")
  return mode == "always" or (tunable and _tunable_takes_effect(glibc_version(), mode))


def restart_with_huge_pages() -> None:
  """Re-executes this process's command line with `HUGETLB_TUNABLE` when that changes anything.

  Call it before the process has done anything it would have to redo: it does not return when it
  restarts (same process id, same arguments and interpreter options, `sys.orig_argv`).
  """
  if sys.flags.interactive or not sys.argv or sys.argv[0] in ("", "-", "-c"):
    return  # a REPL, `python -c` or a script piped to stdin cannot rerun
  env = huge_pages_environment(os.environ, glibc_version(), transparent_huge_pages_mode())
  if env is None:
    return
  for stream in (sys.stdout, sys.stderr):
    if stream is not None:
      stream.flush()
  os.execve(sys.executable, sys.orig_argv, env)


def apply(config) -> None:
  """What the launchers call first: `restart_with_huge_pages` if `config.malloc_huge_pages`."""
  if config.malloc_huge_pages:
    restart_with_huge_pages()
