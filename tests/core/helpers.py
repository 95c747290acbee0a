"""Shared helpers for trainer tests: load a config file like launch/train.py does."""

from __future__ import annotations

import functools
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, arg: str | None = None):
  from jaxrepr import config as config_lib

  return config_lib.load_file(os.path.join(REPO, "configs", f"{name}.py"), arg)


def train_cmd(config: str, workdir: str, *overrides: str) -> list[str]:
  import sys

  return [
    sys.executable,
    os.path.join(REPO, "launch", "train.py"),
    f"--config={config}",
    f"--workdir={workdir}",
    *overrides,
  ]


@functools.cache  # executing launch/bench.py defines its absl flags, which may be defined once
def bench_module():
  """launch/bench.py as a module, loaded once per process (tests of several files share it)."""
  spec = importlib.util.spec_from_file_location("bench", os.path.join(REPO, "launch", "bench.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  return bench
