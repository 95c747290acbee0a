"""The launchers' malloc restart (jaxrepr/host_memory.py): when it restarts, with what, and that the
restarted process runs the same command."""

import os
import subprocess
import sys
import textwrap

from jaxrepr import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_restart_environment_adds_the_tunable_only_where_it_changes_something():
  env = {"HOME": "/home/x"}
  assert host_memory.huge_pages_environment(env, (2, 36), "madvise") == {
    "HOME": "/home/x",
    "GLIBC_TUNABLES": host_memory.HUGETLB_TUNABLE,
  }
  # the user's own tunables are kept
  mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
  assert host_memory.huge_pages_environment(mine, (2, 36), "madvise")["GLIBC_TUNABLES"] == (
    "glibc.malloc.arena_max=2:" + host_memory.HUGETLB_TUNABLE
  )
  # set already (by the restart itself or by the user, either value): no second restart
  for tunables in (host_memory.HUGETLB_TUNABLE, "glibc.malloc.hugetlb=0"):
    assert (
      host_memory.huge_pages_environment({"GLIBC_TUNABLES": tunables}, (2, 36), "madvise") is None
    )
  # the kernel maps huge pages for everything anyway, or never; glibc too old or not glibc
  for glibc, mode in (
    ((2, 36), "always"),
    ((2, 36), "never"),
    ((2, 36), None),
    ((2, 34), "madvise"),
    (None, "madvise"),
  ):
    assert host_memory.huge_pages_environment(env, glibc, mode) is None


def test_transparent_huge_pages_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.transparent_huge_pages_mode(str(path)) == "madvise"
  path.write_text("[always] madvise never\n")
  assert host_memory.transparent_huge_pages_mode(str(path)) == "always"
  assert host_memory.transparent_huge_pages_mode(str(tmp_path / "missing")) is None


_SCRIPT = textwrap.dedent("""
    import ctypes, os, sys
    sys.path.insert(0, {repo!r})
    import ml_collections
    from jaxrepr import host_memory
    mode = sys.argv[1]
    if mode == "forced":  # as on a host that qualifies, to run the restart on any host
      host_memory.transparent_huge_pages_mode = lambda *a: "madvise"
      host_memory.glibc_version = lambda: (2, 35)
    print("start", os.getpid(), sys.argv[1:], int("-u" in sys.orig_argv),
          os.environ.get("GLIBC_TUNABLES", ""), flush=True)
    host_memory.apply(ml_collections.ConfigDict(dict(malloc_huge_pages=mode != "off")))
    # Does a large malloc block carry the kernel's huge-page advice ('hg' in its VmFlags)?
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    address, advised = libc.malloc(64 << 20), None
    if os.path.exists("/proc/self/smaps"):
      inside = False
      for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
          lo, hi = (int(x, 16) for x in head.split("-"))
          inside = lo <= address < hi
        elif inside and head == "VmFlags:":
          advised = "hg" in line.split()[1:]
    print("ready", os.getpid(), advised, flush=True)
""")


def _run(tmp_path, mode):
  script = tmp_path / "prepare.py"
  script.write_text(_SCRIPT.format(repo=REPO))
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run(
    [sys.executable, "-u", str(script), mode, "--flag=1"],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout.splitlines()
  return [line.split(" ", 1) for line in out]


def _host_qualifies() -> bool:
  return (
    host_memory.huge_pages_environment(
      {}, host_memory.glibc_version(), host_memory.transparent_huge_pages_mode()
    )
    is not None
  )


def _check_restarted(lines):
  assert [kind for kind, _ in lines] == ["start", "start", "ready"]
  first, second, ready = (rest for _, rest in lines)
  pid = first.split()[0]
  assert second.split()[0] == pid and ready.split()[0] == pid  # re-executed in place
  for start in (first, second):  # same arguments and interpreter options (-u)
    assert "['forced', '--flag=1'] 1" in start or "['on', '--flag=1'] 1" in start
  assert not first.rstrip().endswith(host_memory.HUGETLB_TUNABLE)
  assert second.endswith(host_memory.HUGETLB_TUNABLE)
  return ready.split()[1]


def test_restart_reruns_the_same_command_in_place_with_the_tunable(tmp_path):
  _check_restarted(_run(tmp_path, "forced"))


def test_launcher_setting_gives_malloc_blocks_huge_pages_where_the_host_allows(tmp_path):
  lines = _run(tmp_path, "on")
  if not _host_qualifies():  # nothing to gain here: no restart
    assert [kind for kind, _ in lines] == ["start", "ready"]
    return
  assert _check_restarted(lines) == "True"  # the tunable took effect


def test_switched_off_it_neither_restarts_nor_advises_huge_pages(tmp_path):
  lines = _run(tmp_path, "off")
  assert [kind for kind, _ in lines] == ["start", "ready"]
  if _host_qualifies():
    assert lines[1][1].split()[1] == "False"
