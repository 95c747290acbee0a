"""configs/contrastive_xor.py: the reference code's XOR settings, its variants, and validation."""

import pytest

from jaxrepr import config as config_lib
from tests.core.helpers import load_config


def test_xor_config_follows_the_reference_code():
  symile, clip = load_config("contrastive_xor"), load_config("contrastive_xor", "clip")
  for config in (symile, clip):
    config_lib.validate(config)
    m = config.model
    assert (m.encoder, m.dim, m.normalize, m.logit_scale_init) == ("linear", 16, "l2", -0.3)
    assert m.max_logit_scale == 0.0  # the reference code does not clip the scale
    assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == ("adamw", 0.1, 0.01)
    assert config.train.batch_size == 1000 and config.data.train_size == 10000
    assert config.evals.test.kind == "contrastive_xor"
  assert (symile.model.objective, symile.model.negative_sampling) == ("symile", "n")
  assert (clip.model.objective, clip.model.pairwise_reduce) == ("clip", "sum")
  assert load_config("contrastive_xor", "n_squared").model.negative_sampling == "n_squared"
  with pytest.raises(ValueError, match="choose at most one"):
    load_config("contrastive_xor", "symile,clip")
