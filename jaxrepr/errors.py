"""Errors a user can fix: a bad config, missing or malformed data, a workdir that is not this run's.

The launchers print these as one line (`error: ...`) and exit 1; the traceback is shown with
`--verbosity=1` or `JAXREPR_TRACEBACK=1`. Anything else (a bug) keeps its traceback. The classes
also derive from the built-in exception the code raised before (ValueError, FileNotFoundError), so
callers that catch those keep working. This module imports nothing from jaxrepr, so every layer
may use it.
"""

import contextlib
import os
import sys


class UserError(Exception):
  """A problem in what the user gave the run (config, data, workdir); the message says what to
  do."""


class ConfigError(UserError, ValueError):
  """A config field has a bad value, names an unknown module, or is missing."""


class DataError(UserError, ValueError):
  """Input data is malformed or does not fit the config; the message names the file or field."""


class MissingFileError(DataError, FileNotFoundError):
  """A file, package or earlier run that the config needs is not there; the message says which
  command or package provides it."""


class WorkdirError(UserError):
  """The workdir belongs to another run, holds a run of another model, or cannot be written."""


def show_tracebacks(verbosity: int = 0) -> bool:
  """Whether launchers show the traceback of a UserError: `--verbosity=1` or JAXREPR_TRACEBACK=1."""
  return verbosity >= 1 or os.environ.get("JAXREPR_TRACEBACK", "") not in ("", "0")


@contextlib.contextmanager
def reported(verbosity: int = 0):
  """Launchers run their work inside this: a UserError becomes one `error: ...` line on stderr and
  exit status 1, Ctrl-C outside the training loop one `interrupted` line and status 130. Other
  exceptions (bugs) propagate with their traceback."""
  try:
    yield
  except UserError as e:
    if show_tracebacks(verbosity):
      raise
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except KeyboardInterrupt:
    if show_tracebacks(verbosity):
      raise
    print("interrupted", file=sys.stderr, flush=True)
    sys.exit(130)
