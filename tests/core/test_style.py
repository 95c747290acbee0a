"""The code follows the project's lint and format rules (ruff, configured in pyproject.toml: line
length 100, 2-space indentation, pyflakes / pycodestyle / bugbear / pyupgrade)."""

import subprocess
import sys

from tests.core.helpers import REPO

PATHS = ("jaxrepr", "launch", "configs", "tests")


def _ruff(*args):
  return subprocess.run(
    [sys.executable, "-m", "ruff", *args, *PATHS], cwd=REPO, capture_output=True, text=True
  )


def test_lint_passes():
  res = _ruff("check", "--no-cache", "--output-format=concise")
  assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_format_is_applied():
  res = _ruff("format", "--no-cache", "--check")
  assert res.returncode == 0, (
    "run `ruff format`; these files differ:\n" + res.stdout[-4000:] + res.stderr[-2000:]
  )
