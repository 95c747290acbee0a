"""Every registered meta-teacher against the requirements it claims (M1-M5 and KL contraction),
on drawn inputs, jitted as in the train step's loss.

The properties, the claims of each operator and the error model: meta_properties.py.
"""

import hypothesis
import pytest

from tests.methods.distill.distill_testlib import CI, META_CONTINUITY_EXAMPLES, META_EXAMPLES
from tests.methods.distill.meta_properties import (
  META_CLAIMS,
  META_REGISTERED,
  meta_continuity_property,
  meta_property,
)

CONTINUOUS = [c for c in META_REGISTERED if "meta_continuity" in META_CLAIMS[c.rule]]


@pytest.mark.parametrize("cand", META_REGISTERED, ids=str)
def test_meta_teacher_claims_hold_for_drawn_alphas_and_distributions(cand):
  meta_property(cand, settings=hypothesis.settings(CI, max_examples=META_EXAMPLES))()


@pytest.mark.parametrize("cand", CONTINUOUS, ids=str)
def test_meta_teacher_is_continuous_in_its_arguments(cand):
  meta_continuity_property(
    cand, settings=hypothesis.settings(CI, max_examples=META_CONTINUITY_EXAMPLES)
  )()
