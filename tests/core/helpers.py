"""Shared helpers for trainer tests: load a config file like launch/train.py does."""

from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(name: str, arg: str | None = None):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def train_cmd(config: str, workdir: str, *overrides: str) -> list[str]:
  import sys

  return [sys.executable, os.path.join(REPO, "launch", "train.py"), f"--config={config}",
          f"--workdir={workdir}", *overrides]
