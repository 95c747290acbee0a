"""Symile against pairwise CLIP and a two-modality CLIP on three strips cut from real images.

    python launch/train.py --config=configs/contrastive_strips.py
    python launch/train.py --config=configs/contrastive_strips.py:clip
    python launch/train.py --config=configs/contrastive_strips.py:clip2

The modalities are the top, middle and bottom strips of the embedded MNIST-5k digits (4,000 train
and 1,000 test images, jaxrepr/data/image_strips.py), each with its own MLP encoder (256 hidden,
d = 64, L2-normalised; CLIP's temperature init and clip at 100). What a run shows: `test/top1` and
`test/top5` of retrieving the bottom strip of a test image among all 1,000 test bottoms from its
top and middle strips (`:clip2`: from its top strip alone), beside `test/chance_top1`, and
`probe/accuracy`, a linear probe of the digit labels on the concatenated strip embeddings
(trained from 4,000 images, scored on 1,000). 600 steps of batch 256, about a minute on a 2-core
CPU. Variants:
    :symile   the Symile loss over (top, middle, bottom), O(N) negatives (the default)
    :clip     pairwise CLIP over the three strips (the sum of the three pair losses)
    :clip2    CLIP on (top, bottom) only
    :tiny     20 steps, small evaluation, for smoke tests
"""

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import image_strips
from jaxrepr.methods import contrastive

VARIANTS = ("symile", "clip", "clip2", "tiny")


def get_config(arg: str | None = None):
  variants = config_variants.parse(
    arg, VARIANTS, "configs/contrastive_strips.py", exclusive=[("symile", "clip", "clip2")]
  )
  config = config_lib.base_config()
  config.method = "contrastive"
  config.data = image_strips.default_config("mnist5k")
  config.model = contrastive.default_model_config()
  config.model.update(
    dict(objective="symile", modalities=image_strips.STRIPS, encoder="mlp", hidden=(256,), dim=64)
  )
  config.train.steps = 600
  config.train.batch_size = 256
  config.train.log_every = 100
  config.train.checkpoint_every = 600
  config.optim.name = "adamw"
  config.optim.lr = 1e-3
  config.optim.weight_decay = 0.01
  config.optim.warmup_steps = 50
  config.evals.test = dict(
    kind="contrastive_retrieval", every=0, target="bottom", batch_size=500, max_rows=0
  )
  config.evals.probe = dict(
    kind="linear_probe", every=0, steps=100, l2=1e-3, batch_size=500, max_train=0
  )
  if "clip" in variants:
    config.model.objective = "clip"
  if "clip2" in variants:
    config.model.update(dict(objective="clip", modalities=("top", "bottom")))
  if "tiny" in variants:
    config.train.steps = 20
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.evals.test.max_rows = 200
    config.evals.test.batch_size = 200
    config.evals.probe.update(dict(steps=10, max_train=500))
  return config
