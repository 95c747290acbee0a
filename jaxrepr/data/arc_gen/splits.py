"""Held-out split of the procedural ARC families: whole families, and combinations of `compose`.

Two axes, both never drawn in training and used only by the evaluation set (`arc.eval_set`):
  families      `heldout_generators`, names of families training never draws;
  combinations  `heldout_combo_fraction`, the share of `compose` combinations (the sorted primitive
                names of a program, so both orders of two primitives are one combination) whose
                stable hash (`compose.is_heldout`) falls below it. Training redraws such programs
                (rejection sampling of the hidden parameters, `make_task(accept=...)`), the held-out
                side draws only them.
Held-out programs are programs the encoder never saw: what test-time latent search is for
(Macfarlane & Bonnet, "Searching Latent Program Spaces", §1). The split is ours, like the pattern
data's program split (jaxrepr/data/pattern.py, "Splits").

A side is a list of (family name, accept) choices; `draw_task` draws one task from a side with the
same rng calls as the training sampler always made (family index, difficulty, `make_task`), so a
configuration without a split gives the batches it gave before the split existed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxrepr.data import arc_gen
from jaxrepr.data.arc_gen import compose
from jaxrepr.data.arc_gen.base import Pair, Params
from jaxrepr.errors import ConfigError

SIDES = ("all", "train", "heldout")
Choice = tuple[str, Callable[[Params], bool] | None]


def parse_names(spec: str | None, field: str) -> list[str]:
  """Family names from a comma-separated `spec` ('all': every family; empty: none)."""
  if not spec:
    return []
  if spec == "all":
    return sorted(arc_gen.GENERATORS)
  names = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in names if n not in arc_gen.GENERATORS]
  if unknown or not names:
    raise ConfigError(
      f"config.data.{field}: unknown families {unknown or spec!r}; known: "
      f"{sorted(arc_gen.GENERATORS)}"
    )
  return names


def _combo_filter(fraction: float, heldout: bool) -> Callable[[Params], bool]:
  return lambda params: compose.is_heldout(compose.combination(params), fraction) == heldout


def side_choices(
  generators: Sequence[str], heldout_generators: Sequence[str], combo_fraction: float, side: str
) -> list[Choice]:
  """The (family, accept) choices of one side: 'all' (no split), 'train' or 'heldout'.

  Raises ConfigError (naming the field) for a held-out family outside `generators`, a fraction
  outside [0, 1), a combination split without `compose`, or an empty side.
  """
  if side not in SIDES:
    raise ValueError(f"side must be one of {SIDES}, got {side!r}")
  outside = [n for n in heldout_generators if n not in generators]
  if outside:
    raise ConfigError(
      f"config.data.heldout_generators: {outside} are not in config.data.generators"
    )
  if not 0.0 <= combo_fraction < 1.0:
    raise ConfigError(f"config.data.heldout_combo_fraction={combo_fraction} must be in [0, 1)")
  splits_combos = combo_fraction > 0 and compose.NAME not in heldout_generators
  if combo_fraction > 0 and compose.NAME not in generators:
    raise ConfigError(
      f"config.data.heldout_combo_fraction={combo_fraction} splits the {compose.NAME!r} family, "
      "which config.data.generators does not include"
    )
  if side == "all":
    choices: list[Choice] = [(n, None) for n in generators]
  elif side == "train":
    choices = [
      (n, _combo_filter(combo_fraction, False) if splits_combos and n == compose.NAME else None)
      for n in generators
      if n not in heldout_generators
    ]
  else:
    choices = [(n, None) for n in heldout_generators]
    if splits_combos:
      choices.append((compose.NAME, _combo_filter(combo_fraction, True)))
  if not choices:
    field = "heldout_generators" if side == "train" else "heldout_generators (or _combo_fraction)"
    raise ConfigError(f"config.data.{field} leaves the {side} side of the generators empty")
  return choices


def draw_task(
  rng: np.random.Generator,
  choices: Sequence[Choice],
  num_pairs: int,
  difficulty_range: tuple[float, float],
  max_size: tuple[int, int],
) -> list[Pair]:
  """One task: a family of `choices`, a difficulty in `difficulty_range`, `num_pairs` pairs."""
  name, accept = choices[int(rng.integers(len(choices)))]
  difficulty = float(rng.uniform(*difficulty_range))
  return arc_gen.make_task(rng, name, num_pairs, difficulty, max_size, accept=accept)
