"""Names in the config -> modules: `config.method='lpn'` -> `jaxrepr.methods.lpn` (DESIGN rule 4).

`lookup` imports `jaxrepr.<package>.<name>` explicitly (no reflection beyond that), and a name that
is not a module of the package, or a module without the attribute the contract requires, is a
one-line error naming the config field and the valid choices.

Who may use what, so that no import cycle appears (tests/core/test_import_rules.py counts every
lookup as an import of each module of the package):
  method_module, data_module   here: evaluators and the trainer use them; this module imports
                               nothing of jaxrepr but errors.py, and no method or data module
                               imports it.
  evaluator_class              in jaxrepr/config.py (the trainer's side): evaluators themselves
                               use this module, so the lookup of evaluators cannot live here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import ml_collections

from jaxrepr.errors import ConfigError


def available(package: str) -> list[str]:
  """The public module names of `jaxrepr.<package>` (a leading underscore marks private helpers)."""
  pkg = importlib.import_module(f"jaxrepr.{package}")
  return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def lookup(package: str, name: str, field: str, attribute: str) -> ModuleType:
  """`jaxrepr.<package>.<name>`, or an error naming the config field and the valid choices."""
  choices = available(package)
  if name not in choices:
    raise ConfigError(
      f"{field}={name!r} is not a module of jaxrepr.{package}; choose one of {choices}"
    )
  module = importlib.import_module(f"jaxrepr.{package}.{name}")
  if not hasattr(module, attribute):
    raise ConfigError(f"{field}={name!r}: jaxrepr.{package}.{name} has no {attribute}()")
  return module


def method_module(config: ml_collections.ConfigDict) -> ModuleType:
  """The method package of `config.method` (its contract: jaxrepr/methods/base.py)."""
  return lookup("methods", config.method, "config.method", "build")


def data_module(config: ml_collections.ConfigDict) -> ModuleType:
  """The data module of `config.data.name` (its contract: jaxrepr/data/__init__.py)."""
  return lookup("data", config.data.name, "config.data.name", "train_iterator")
