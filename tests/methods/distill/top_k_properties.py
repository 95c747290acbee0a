"""Partial access on drawn inputs: a teacher truncated to its top k classes puts no mass on a cut
class, through the train step's own target function (`distill.soft_target`), for every registered
softening family. The inputs come from `distill_testlib`; a failed claim raises `AxiomViolation`
naming it, as in softening_properties.py."""

import dataclasses
import functools
import types
from collections.abc import Callable

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np

from jaxrepr.methods import distill
from jaxrepr.methods.distill import axioms
from jaxrepr.methods.distill import operators as ops
from tests.methods.distill.distill_testlib import (
  CI,
  CLASS_COUNTS,
  LOG_T_DOMAIN,
  ROWS,
  _probs,
  _require,
  logit_vectors,
)

# ----------------------------------------------------------------------------------------------
# Partial access: a teacher truncated to its top k classes.


@dataclasses.dataclass(frozen=True)
class TopKCandidate:
  """`apply(p_RxV, T, k)`: the KD target of a top-k teacher over all classes; `family` names the
  softening family whose temperature domain is drawn."""

  name: str
  apply: Callable
  family: str

  def __str__(self) -> str:
    return self.name


def target_config(family: str, T, k: int) -> types.SimpleNamespace:
  """The fields of `config.model` that `distill.soft_target` reads, for a stage that distils a
  top-k teacher through `family` at temperature T (a traced scalar under jit)."""
  fields = distill.default_model_config().to_dict()
  fields.update(family=family, temperature=T, top_k=k)
  return types.SimpleNamespace(**fields)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _train_step_target(p, T, family: str, k: int):
  # The train step's target function, jitted as in the loss (one compile per family, shape and k),
  # fed the teacher's log-probabilities as logits.
  return distill.soft_target(target_config(family, T, k), ops.log_prob(p))


def _registered_top_k(family: str) -> Callable:
  def apply(p, T, k):
    return _train_step_target(p, T, family, k)

  return apply


TOP_K_REGISTERED = [
  TopKCandidate(f"soft_target[{name}]", _registered_top_k(name), name)
  for name in sorted(ops.FAMILIES)
]


def top_k_property(cand: TopKCandidate, enabled=frozenset({"top_k", "support"}), settings=CI):
  """Truncate to the top k, renormalise, soften, on drawn rows, k and T: no mass on a cut class,
  judged on the output over all classes (`axioms.check_top_k`), nor, for a family with the
  'support' reading, on a zero-probability class that was kept (`axioms.check_support`); both
  with tolerances at float rounding."""
  lo, hi = LOG_T_DOMAIN[cand.family]
  keeps_zeros = ops.FAMILIES[cand.family].limit_support == "support"

  @settings
  @hypothesis.given(data=st.data())
  def run(data):
    num_classes = data.draw(st.sampled_from(CLASS_COUNTS), label="num_classes")
    z_V = data.draw(logit_vectors(num_classes), label="logits")
    k = data.draw(st.sampled_from(axioms.top_k_sizes(num_classes)), label="k")
    T = float(np.exp(data.draw(st.floats(lo, hi), label="log_T")))
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    # Rows of different sharpness from one drawn vector: softmax(c z) for c in [1e-2, 3].
    c_R = 10.0 ** np.random.default_rng(seed).uniform(-2.0, 0.5, ROWS)
    p_RxV = _probs(c_R[:, None] * z_V[None])
    with jax.enable_x64(True):
      result = axioms.check_top_k(cand.apply, p_RxV, [T], [k])
      support = axioms.check_support(lambda p, T: cand.apply(p, T, k), p_RxV, [T])
    _require(result.passed, "top_k", lambda: str(result), enabled)
    _require(support.passed or not keeps_zeros, "support", lambda: str(support), enabled)

  return run
