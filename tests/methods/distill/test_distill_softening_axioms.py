"""Every registered softening family against every axiom, on drawn inputs, through the functions
the train step calls: the family itself, `soften_logits` (the power family on logits) and, for a
top-k teacher, `distill.soft_target`.

The properties and their error model: softening_properties.py (top-k: top_k_properties.py); the
inputs: distill_testlib.py.
"""

import hypothesis
import numpy as np
import pytest

from tests.methods.distill.distill_testlib import (
  CI,
  JUMP_EXAMPLES,
  P_CONTINUITY_EXAMPLES,
  SWEEP_EXAMPLES,
  TOP_K_EXAMPLES,
)
from tests.methods.distill.top_k_properties import (
  TOP_K_REGISTERED,
  top_k_property,
)
from tests.methods.distill.softening_properties import (
  REGISTERED,
  SOFTENING,
  jump_property,
  p_continuity_property,
  sweep_property,
)


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_claims_hold_across_drawn_temperatures(cand):
  sweep_property(cand, settings=hypothesis.settings(CI, max_examples=SWEEP_EXAMPLES))()


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_claims_hold_in_float32_on_the_train_step_path(cand):
  """The train step softens float32 targets: soften_logits(z, T), or family(softmax(z), T)."""
  sweep_property(
    cand, settings=hypothesis.settings(CI, max_examples=SWEEP_EXAMPLES), dtype=np.float32
  )()


@pytest.mark.parametrize("cand", SOFTENING, ids=str)
def test_softening_is_continuous_in_temperature(cand):
  jump_property(cand, settings=hypothesis.settings(CI, max_examples=JUMP_EXAMPLES))()


@pytest.mark.parametrize("cand", REGISTERED, ids=str)
def test_softening_is_continuous_in_the_distribution(cand):
  p_continuity_property(
    cand, settings=hypothesis.settings(CI, max_examples=P_CONTINUITY_EXAMPLES)
  )()


@pytest.mark.parametrize("cand", TOP_K_REGISTERED, ids=str)
def test_top_k_teacher_puts_no_mass_on_cut_classes(cand):
  top_k_property(cand, settings=hypothesis.settings(CI, max_examples=TOP_K_EXAMPLES))()
