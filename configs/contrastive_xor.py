"""Symile against pairwise CLIP on the XOR modalities (Symile, Saporta et al., NeurIPS 2024, 5.1).

    python launch/train.py --config=configs/contrastive_xor.py --config.data.p_hat=0.5
    python launch/train.py --config=configs/contrastive_xor.py:clip --config.data.p_hat=0.5

What a run shows: `test/accuracy` of predicting b from (a, c) by zero-shot retrieval among the
2^5 = 32 binary candidates, beside `test/bayes_accuracy` (1/32 + p_hat 31/32) and `test/chance`
(1/32), after 200 steps of batch 1,000 (20 epochs of the 10k training set; the reference
code's README toy trains 50), about 20 s on a 2-core CPU. Symile approaches the Bayes accuracy,
pairwise CLIP stays at chance for every p_hat (docs/contrastive.md: the sweep and its command).
Variants:
    :symile      the Symile loss, O(N) negatives (the default)
    :clip        pairwise CLIP (sum of the three symmetric InfoNCE losses, as the reference code)
    :n_squared   Symile with all N^2 negative combinations (use a smaller batch: N^3 MIPs a step)
    :missing     each training modality missing with probability 0.2 (0.5 placeholder bits and a
                 missingness indicator; test examples fully observed), the reference code's
                 missing-modality toy
    :tiny        40 steps of batch 200, for smoke tests

Encoders as the reference code's XOR experiment: one linear map with bias per modality to
d = 16, L2-normalised, a learned logit scale started at -0.3, AdamW lr 0.1, weight decay 0.01.
"""

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import xor_modalities
from jaxrepr.methods import contrastive

VARIANTS = ("symile", "clip", "n_squared", "missing", "tiny")


def get_config(arg: str | None = None):
  variants = config_variants.parse(
    arg, VARIANTS, "configs/contrastive_xor.py", exclusive=[("symile", "clip")]
  )
  config = config_lib.base_config()
  config.method = "contrastive"
  config.data = xor_modalities.default_config(d_v=5, p_hat=1.0)
  config.model = contrastive.default_model_config()
  config.model.update(
    dict(
      objective="symile",
      modalities=xor_modalities.MODALITIES,
      encoder="linear",
      dim=16,
      normalize="l2",
      logit_scale_init=-0.3,
      max_logit_scale=0.0,  # the reference code does not clip
    )
  )
  config.train.steps = 200
  config.train.batch_size = 1000
  config.train.log_every = 50
  config.train.checkpoint_every = 200
  config.optim.name = "adamw"
  config.optim.schedule = "constant"
  config.optim.lr = 0.1
  config.optim.weight_decay = 0.01
  config.evals.test = dict(kind="contrastive_xor", every=100, split="test", batch_size=1000)
  if "clip" in variants:
    config.model.objective = "clip"
  if "n_squared" in variants:
    config.model.negative_sampling = "n_squared"
    config.train.batch_size = 200
  if "missing" in variants:
    config.data.missing_prob = 0.2
  if "tiny" in variants:
    config.train.steps = 40
    config.train.batch_size = 200
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.evals.test.every = 20
  return config
