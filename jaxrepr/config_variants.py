"""Config-file variants: `--config=configs/lpn.py:arc,tiny` calls `get_config("arc,tiny")`.

Every `configs/<name>.py` reads its argument with `parse`, so all of them accept the same syntax and
report the same one-line errors:

    VARIANTS = ("pattern", "arc", "grad0", "grad1", "tiny")

    def get_config(arg=None):
      variants = config_variants.parse(arg, VARIANTS, "configs/lpn.py",
                                       exclusive=[("pattern", "arc"), ("grad0", "grad1")])
      data = variants.pick(("pattern", "arc"), default="pattern")
      if "tiny" in variants:
        ...

Syntax: names separated by commas, in any order; blanks around a name and empty items (`arc,`)
are ignored, and a repeated name counts once. A name that is not a variant of the file, or two names
of one exclusive group, is a `ConfigError` that lists the valid choices; the launchers print it as
one `error: ...` line. A config file that asks about a name it does not declare (`"tinny" in
variants`) gets a ValueError: that is a bug in the config file, not in the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from jaxrepr.errors import ConfigError


def _names(allowed: Mapping[str, str] | Sequence[str]) -> tuple[str, ...]:
  # A mapping is {name: one-line description}; only its names matter here.
  names = tuple(allowed.keys() if isinstance(allowed, Mapping) else allowed)
  if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"variant names must be distinct non-empty strings, got {names}")
  return names


class Variants:
  """The variants chosen on the command line, in the order given, each checked against the file's.

  `name in variants` and `variants.pick(group, default)` are the only questions a config file asks;
  both refuse a name the file did not declare, so a misspelt name in the config file cannot silently
  read as "not chosen".
  """

  def __init__(self, chosen: Sequence[str], allowed: Sequence[str], config_file: str):
    self._chosen = tuple(chosen)
    self._allowed = tuple(allowed)
    self._config_file = config_file

  @property
  def names(self) -> tuple[str, ...]:
    """The chosen variants in command-line order (repeats removed)."""
    return self._chosen

  def _check_declared(self, names: Iterable[str]) -> None:
    undeclared = [n for n in names if n not in self._allowed]
    if undeclared:
      raise ValueError(
        f"{self._config_file} asks about variants {undeclared} that it does not "
        f"declare ({list(self._allowed)})"
      )

  def __contains__(self, name: object) -> bool:
    self._check_declared([name])
    return name in self._chosen

  def __iter__(self) -> Iterator[str]:
    return iter(self._chosen)

  def __len__(self) -> int:
    return len(self._chosen)

  def __repr__(self) -> str:
    return f"Variants({list(self._chosen)} of {self._config_file})"

  def pick(self, group: Sequence[str], default: str | None = None) -> str | None:
    """The one variant of `group` that was chosen, or `default` when none was.

    Two of the group is a ConfigError, whether or not `parse` was told the group is exclusive.
    """
    group = tuple(group)
    self._check_declared(group)
    chosen = [n for n in self._chosen if n in group]
    _check_at_most_one(chosen, group, self._config_file)
    return chosen[0] if chosen else default


def _check_at_most_one(chosen: Sequence[str], group: Sequence[str], config_file: str) -> None:
  if len(chosen) > 1:
    raise ConfigError(f"{config_file}: choose at most one of {list(group)}, got {list(chosen)}")


def parse(
  arg: str | None,
  allowed: Mapping[str, str] | Sequence[str],
  config_file: str,
  *,
  exclusive: Iterable[Sequence[str]] = (),
) -> Variants:
  """Parses the `:a,b,c` of `--config=<config_file>:a,b,c` (`arg` None or '' chooses none).

  Args:
    arg: the string after the colon, as ml_collections passes it to `get_config`.
    allowed: the file's variant names (a sequence, or a mapping of name -> description).
    config_file: how the error messages name the file, e.g. 'configs/lpn.py'.
    exclusive: groups of variants that set the same thing; at most one of each may be chosen.

  Returns:
    The chosen variants.

  Raises:
    ConfigError: a name that is not in `allowed`, or two names of one `exclusive` group; the message
      is one line naming the file and the valid choices.
  """
  names = _names(allowed)
  if arg is not None and not isinstance(arg, str):
    raise ConfigError(f"{config_file}: variants must be a comma-separated string, got {arg!r}")
  chosen: list[str] = []
  for item in (arg or "").split(","):
    item = item.strip()
    if item and item not in chosen:
      chosen.append(item)
  unknown = [n for n in chosen if n not in names]
  if unknown:
    raise ConfigError(
      f"unknown variants {unknown} for {config_file}; choose from {list(names)} (comma-separated)"
    )
  for group in exclusive:
    group = tuple(group)
    undeclared = [n for n in group if n not in names]
    if undeclared:
      raise ValueError(
        f"{config_file}: exclusive group {group} names undeclared variants {undeclared}"
      )
    _check_at_most_one([n for n in chosen if n in group], group, config_file)
  return Variants(chosen, names, config_file)
