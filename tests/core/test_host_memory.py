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
      "HOME": "/home/x", "GLIBC_TUNABLES": host_memory.HUGETLB_TUNABLE}
  # the user's own tunables are kept
  mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
  assert host_memory.huge_pages_environment(mine, (2, 36), "madvise")["GLIBC_TUNABLES"] == (
      "glibc.malloc.arena_max=2:" + host_memory.HUGETLB_TUNABLE)
  # set already (by the restart itself or by the user, either value): no second restart
  for tunables in (host_memory.HUGETLB_TUNABLE, "glibc.malloc.hugetlb=0"):
    assert host_memory.huge_pages_environment({"GLIBC_TUNABLES": tunables}, (2, 36),
                                              "madvise") is None
  # the kernel maps huge pages for everything anyway, or never; glibc too old or not glibc
  for glibc, mode in (((2, 36), "always"), ((2, 36), "never"), ((2, 36), None), ((2, 34), "madvise"),
                      (None, "madvise")):
    assert host_memory.huge_pages_environment(env, glibc, mode) is None


def test_transparent_huge_pages_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.transparent_huge_pages_mode(str(path)) == "madvise"
  path.write_text("[always] madvise never\n")
  assert host_memory.transparent_huge_pages_mode(str(path)) == "always"
  assert host_memory.transparent_huge_pages_mode(str(tmp_path / "missing")) is None


_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import ml_collections
    from jaxrepr import parallel
    print("start", os.getpid(), sys.argv[1:], os.environ.get("GLIBC_TUNABLES", ""), flush=True)
    parallel.prepare_host(ml_collections.ConfigDict(dict(malloc_huge_pages=sys.argv[1] == "on")))
    print("ready", os.getpid(), flush=True)
""")


def _run(tmp_path, *args):
  script = tmp_path / "prepare.py"
  script.write_text(_SCRIPT.format(repo=REPO))
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-u", str(script), *args], env=env, capture_output=True,
                       text=True, check=True).stdout.splitlines()
  return [line.split(" ", 1) for line in out]


def test_prepare_host_restarts_the_same_command_once_with_the_tunable(tmp_path):
  lines = _run(tmp_path, "on", "--flag=1")
  expected = host_memory.huge_pages_environment(
      {}, host_memory.glibc_version(), host_memory.transparent_huge_pages_mode())
  if expected is None:  # this host gains nothing from it: no restart
    assert [kind for kind, _ in lines] == ["start", "ready"]
    return
  assert [kind for kind, _ in lines] == ["start", "start", "ready"]
  first, second, ready = (rest for _, rest in lines)
  pid = first.split()[0]
  assert second.split()[0] == pid and ready == pid  # re-executed in place, not a child process
  assert "['on', '--flag=1']" in first and "['on', '--flag=1']" in second
  assert not first.endswith(host_memory.HUGETLB_TUNABLE)
  assert second.endswith(host_memory.HUGETLB_TUNABLE)


def test_prepare_host_does_not_restart_when_switched_off(tmp_path):
  assert [kind for kind, _ in _run(tmp_path, "off")] == ["start", "ready"]
