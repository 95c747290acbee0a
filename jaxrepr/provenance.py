"""Which code produced a result: the commit of the checkout a run or a table was made from."""

from __future__ import annotations

import os
import subprocess

# The checkout this package lives in (an editable install); elsewhere git finds no repository.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the project's own writers change (bench tables, kept run records, generated docs blocks):
# edits there do not change a result, so they do not mark the code as changed. Without this, a
# bench suite on a clean checkout labelled every row after its first '+', the first row's write
# having changed bench/results.json.
RECORD_PATHS = ("bench", "results", "docs", "README.md")


def commit(repo: str = CHECKOUT) -> str:
  """The short commit hash of `repo`'s HEAD ('+' when tracked files outside RECORD_PATHS have
  changes since), or '?' outside a git checkout."""
  try:
    head = subprocess.run(
      ["git", "-C", repo, "rev-parse", "--short", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "-C", repo, "status", "--porcelain", "--untracked-files=no", "--", ":(top)"]
      + [f":(top,exclude){p}" for p in RECORD_PATHS],
      capture_output=True,
      text=True,
      check=True,
      # with literal pathspecs (a user's environment) the magic above would match nothing
      env={**os.environ, "GIT_LITERAL_PATHSPECS": "0"},
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "?"
  return head + ("+" if dirty else "")
