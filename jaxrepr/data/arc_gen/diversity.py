"""How many distinct programs each procedural ARC family draws: distinct programs per 1,000 draws.

Definitions (what the table in the docs reports; `launch/arc_diversity.py` regenerates it):
  program    a family's hidden parameters, as `sample_params` draws them (the flip axis, the colour
             permutation, the compose steps with their parameters), compared exactly
             (`canonical`). Draw i uses rng [seed, i] and a difficulty uniform in [0, 1], as the
             training sampler draws them, at the 30 x 30 limit. This is an upper bound on the
             distinct input -> output functions: two parameter sets may act alike.
  compose, in addition:
    combinations  distinct sorted primitive-name tuples (the unit of the held-out split);
    functions     distinct outputs on a fixed probe set (`probe_grids`: object scenes and random
                  grids, 5 x 5 so that every program's output fits; a step that cannot act, e.g.
                  a tie for "largest", is recorded as such). A lower bound on distinct functions:
                  two programs that agree on every probe count once.
"""

from __future__ import annotations

import hashlib

import numpy as np

from jaxrepr.data import arc_gen
from jaxrepr.data.arc_gen import compose
from jaxrepr.data.arc_gen.base import Params, Retry, dense_grid


def canonical(value) -> str:
  """A string equal for equal parameter values (arrays by content, dicts by sorted key)."""
  if isinstance(value, dict):
    return "{" + ",".join(f"{k}:{canonical(value[k])}" for k in sorted(value)) + "}"
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(canonical(v) for v in value) + ")"
  if isinstance(value, np.ndarray):
    return "[" + ",".join(str(int(v)) for v in value.reshape(-1)) + "]"
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return repr(value)


def draw_params(name: str, draws: int, seed: int = 0) -> list[Params]:
  """The hidden parameters of `draws` tasks of family `name` (draw i from rng [seed, i])."""
  gen = arc_gen.GENERATORS[name]
  out = []
  for i in range(draws):
    rng = np.random.default_rng([seed, i])
    out.append(gen.sample_params(rng, float(rng.uniform(0.0, 1.0))))
  return out


def distinct_programs(name: str, draws: int = 1000, seed: int = 0) -> int:
  return len({canonical(p) for p in draw_params(name, draws, seed)})


def probe_grids(seed: int = 0) -> list[np.ndarray]:
  """Six 5 x 5 object scenes over colours 1..9 and six 5 x 5 random grids, fixed by `seed`."""
  rng = np.random.default_rng([seed, 2**32 - 1])
  scenes = [compose.scene(rng, 5, 5, 1.0, np.arange(1, 10)) for _ in range(6)]
  return scenes + [dense_grid(rng, 5, 5, 1.0) for _ in range(6)]


def function_fingerprint(params: Params, probes: list[np.ndarray]) -> str:
  """A hash of a compose program's outputs on the probe grids (shape and cells)."""
  h = hashlib.blake2b(digest_size=16)
  for g in probes:
    try:
      out = compose.run_program(g, params, strict=False)
      h.update(np.asarray(out.shape, np.int64).tobytes() + out.astype(np.int8).tobytes())
    except Retry:
      h.update(b"cannot act")
  return h.hexdigest()


def compose_counts(draws: int = 1000, seed: int = 0) -> dict[str, int]:
  params = draw_params(compose.NAME, draws, seed)
  probes = probe_grids(seed)
  return {
    "programs": len({canonical(p) for p in params}),
    "combinations": len({compose.combination(p) for p in params}),
    "functions": len({function_fingerprint(p, probes) for p in params}),
  }


def table(draws: int = 1000, seed: int = 0) -> tuple[str, dict]:
  """The markdown diversity table and its numbers ({family: count, 'compose': {...}})."""
  counts: dict = {n: distinct_programs(n, draws, seed) for n in sorted(arc_gen.GENERATORS)}
  counts[compose.NAME] = compose_counts(draws, seed)
  single = sorted((n for n in counts if n != compose.NAME), key=lambda n: (counts[n], n))
  lines = [
    f"| family | distinct programs per {draws:,} draws |",
    "|---|---:|",
    *(f"| {n} | {counts[n]} |" for n in single),
  ]
  c = counts[compose.NAME]
  lines.append(
    f"| **{compose.NAME}** | **{c['programs']}** ({c['combinations']} primitive combinations, "
    f"{c['functions']} distinct functions on the probe grids) |"
  )
  few = sum(counts[n] <= 9 for n in single)
  lines.append("")
  lines.append(
    f"{few} of the {len(single)} single families draw at most 9 distinct programs; "
    f"the median is {int(np.median([counts[n] for n in single]))}."
  )
  return "\n".join(lines), counts
