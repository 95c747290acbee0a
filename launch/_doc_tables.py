"""Generated text in the docs: the commit of the checkout, blocks of a page between markers, and
the text stated beside a results table (its command and commits).

A generated block of a docs page sits between a pair of marker lines, `<!-- NAME:start -->` and
`<!-- NAME:end -->` (the tables of launch/summarize_runs.py, summarize_distill.py and
enroll_report.py; launch/bench.py keeps its own pair in docs/benchmarks.md). The command that
writes a block replaces only the text between its markers and keeps the rest of the page as it is,
so a table edited by hand is overwritten by the next run of that command.
"""

import os
import re
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from jaxrepr import provenance  # noqa: E402
from jaxrepr.errors import ConfigError, MissingFileError  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A block's name: letters, digits, '-', '_' and '.'.
_BLOCK = re.compile(r"<!-- ([\w.-]+):(start|end) -->")


def commit(repo: str = CHECKOUT) -> str:
  """The short commit hash of `repo`'s HEAD ('+' when its code has changes since: see
  jaxrepr/provenance.py), or '?' outside a git checkout."""
  return provenance.commit(repo)


def checkout_relative(path: str) -> str:
  """`path` relative to the checkout's root when it lies inside the checkout, else absolute: what a
  command stated in the docs names, to be run from the root."""
  full = os.path.abspath(path)
  return (
    os.path.relpath(full, CHECKOUT) if os.path.commonpath([full, CHECKOUT]) == CHECKOUT else full
  )


def command_line(script: str, flag_list, path_flags=("runs", "out", "into"), always=()) -> str:
  """The command line that regenerates a table: `script` (e.g. 'launch/summarize_runs.py') with
  the flags of `flag_list` the user gave (and those named in `always`, given or not), paths of
  `path_flags` relative to the checkout's root (a comma-separated `runs` path by path)."""
  args = []
  for flag in flag_list:
    if not flag.present and flag.name not in always:
      continue
    for arg in flags.FLAGS[flag.name].serialize().splitlines():
      name, eq, value = arg.partition("=")
      if eq and flag.name in path_flags:
        value = (
          ",".join(map(checkout_relative, value.split(",")))
          if flag.name == "runs"
          else checkout_relative(value)
        )
      args.append(shlex.quote(name + eq + value))
  return " ".join(["python " + script, *args])


def check_into(page: str | None, marker: str | None) -> None:
  """The --into / --marker pair of a command that writes a docs block, checked before any work:
  both or neither, a valid block name, a page that exists with one pair of the block's lines."""
  if (page is None) != (marker is None):
    raise ConfigError("--into and --marker go together: the page and the name of its block")
  if page is None:
    return
  try:
    begin, end = markers(marker)
  except ValueError as e:
    raise ConfigError(f"--marker: {e}") from None
  if not os.path.exists(page):
    raise MissingFileError(f"--into={page} does not exist")
  with open(page) as f:
    text = f.read()
  if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
    raise ConfigError(
      f"{page}: expected one '{begin}' line before one '{end}' line; put the lines '{begin}' "
      f"and '{end}' where the table goes"
    )


def write_into(page: str, marker: str, body: str) -> None:
  """Writes `body` into the block `marker` of `page` (checked as `check_into` checks it) and says
  so on stderr."""
  check_into(page, marker)
  write_block(page, marker, body)
  print(f"wrote the block {marker!r} of {page}", file=sys.stderr)


def markers(name: str) -> tuple[str, str]:
  """The start and end marker lines of the block `name`."""
  if not re.fullmatch(r"[\w.-]+", name):
    raise ValueError(f"block name {name!r}: use letters, digits, '-', '_' and '.'")
  return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_between(path: str, begin: str, end: str, body: str) -> None:
  """Rewrites `path` with `body` (its lines) in place of the text between its one `begin` line and
  its one `end` line; everything else in the file is kept."""
  with open(path) as f:
    text = f.read()
  if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
    raise ValueError(f"{path}: expected one '{begin}' line before one '{end}' line")
  head, rest = text.split(begin, 1)
  tail = rest.split(end, 1)[1]
  with open(path, "w") as f:
    f.write(head + begin + "\n" + body.strip("\n") + "\n" + end + tail)


def write_block(path: str, name: str, body: str) -> None:
  """Replaces the block `name` of the page `path` with `body`."""
  replace_between(path, *markers(name), body)


def blocks(text: str, where: str = "text") -> dict[str, str]:
  """{name: body} of every `<!-- NAME:start -->` ... `<!-- NAME:end -->` block of `text`; a marker
  without its pair, a block inside another, or two blocks of one name is an error naming `where`."""
  out, open_name, open_at = {}, None, 0
  for m in _BLOCK.finditer(text):
    name, kind = m.groups()
    if kind == "start":
      if open_name is not None:
        raise ValueError(f"{where}: block {name!r} starts inside block {open_name!r}")
      if name in out:
        raise ValueError(f"{where}: two blocks named {name!r}")
      open_name, open_at = name, m.end()
    else:
      if open_name != name:
        raise ValueError(f"{where}: '{m.group(0)}' without its start marker")
      out[name], open_name = text[open_at : m.start()].strip("\n"), None
  if open_name is not None:
    raise ValueError(f"{where}: block {open_name!r} has no end marker")
  return out


def results_block(
  text: str,
  cmd: str,
  checkout_commit: str,
  commits: list[str],
  skipped: list,
  commit_column: bool = True,
) -> str:
  """The table with, before it, the command that regenerates it and the commits (this checkout's
  now, the runs' own where they recorded one: named here, or for several, in the table's last
  column when it has one, `commit_column`), and after it the runs left out."""
  if not commits:
    recorded = "the runs recorded no commit"
  elif len(commits) == 1:
    recorded = f"the runs recorded commit `{commits[0]}`"
  elif commit_column:
    recorded = "the runs recorded the commits of the last column"
  else:
    recorded = "the runs recorded commits " + ", ".join(f"`{c}`" for c in commits)
  lines = [
    f"Generated at commit `{checkout_commit}` by this command, run from the checkout's root "
    f"({recorded}):",
    "",
    "    " + cmd,
    "",
    text,
  ]
  if skipped:
    lines += [""] + [f"Left out, incomplete: `{w}` ({reason})." for w, reason in skipped]
  return "\n".join(lines)
