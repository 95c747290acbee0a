"""Back-prop CNN classifier on scikit-learn's embedded 8x8 digits.

    python launch/train.py --config=configs/classifier.py

What a run shows: test accuracy ~0.97-0.98 after 1,500 steps of batch 128 (about 30 s on a
2-core CPU, plus a few seconds of compilation). Variants:
    :mlp    an MLP instead of the CNN
    :tiny   40 steps, for smoke tests
"""

from jaxrepr import config as config_lib
from jaxrepr.methods import classifier


def get_config(arg: str | None = None):
  config = config_lib.base_config()
  config.method = "classifier"
  config.data.name = "images"
  config.data.dataset = "digits"
  config.data.test_fraction = 0.2
  config.data.split_seed = 0
  config.model = classifier.default_model_config()
  config.train.steps = 1500
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.optim.name = "adamw"
  config.optim.lr = 2e-3
  config.optim.warmup_steps = 50
  config.evals.test = dict(kind="classification", every=500, split="test", batch_size=512)
  variants = set(arg.split(",")) if arg else set()
  unknown = variants - {"mlp", "tiny"}
  if unknown:
    raise ValueError(f"unknown variants {sorted(unknown)} for configs/classifier.py; "
                     "choose from ['mlp', 'tiny']")
  if "mlp" in variants:
    config.model.arch = "mlp"
    config.model.hidden = (256, 128)
  if "tiny" in variants:
    config.train.steps = 40
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.evals.test.every = 20
  return config
