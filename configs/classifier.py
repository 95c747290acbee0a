"""Back-prop CNN classifier on scikit-learn's embedded 8x8 digits.

    python launch/train.py --config=configs/classifier.py
    python launch/train.py --config=configs/classifier.py:fashion_mnist
    python launch/eval.py --config=configs/classifier.py:fashion_mnist \
        --workdir=runs/classifier_fashion_mnist --evals=embeddings

What a run shows: `test/accuracy` (and `test/cross_entropy`) at steps 500, 1,000 and 1,500 of
batch 128, about 30 s of training on a 2-core CPU plus a few seconds of compilation; measured
results: docs/classifier.md. Variants:
    :mlp            an MLP instead of the CNN
    :fashion_mnist  Fashion-MNIST (28x28, the official 60k/10k split; Debian's
                    dataset-fashion-mnist IDX files or --config.data.data_dir=DIR), 1,000 steps
                    (about 3 minutes): the encoder that `configs/enroll.py:real` reads from its
                    default workdir, runs/classifier_fashion_mnist; its `embeddings` evaluation
                    writes the features to <workdir>/embeddings/ at the end of the run (the
                    launch/eval.py command above writes them for an earlier run)
    :tiny           40 steps, for smoke tests
Image sets read from disk (`config.data.dataset` 'mnist': IDX files; 'cifar10', 'cifar100': the
CIFAR python batches; jaxrepr/data/images.py) take their directory from config.data.data_dir:

    python launch/train.py --config=configs/classifier.py --config.data.dataset=mnist \
        --config.data.data_dir=/path/to/mnist_idx
"""

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import images
from jaxrepr.methods import classifier

VARIANTS = ("mlp", "fashion_mnist", "tiny")


def get_config(arg: str | None = None):
  variants = config_variants.parse(arg, VARIANTS, "configs/classifier.py")
  config = config_lib.base_config()
  config.method = "classifier"
  config.data = images.default_config("digits")
  config.model = classifier.default_model_config()
  config.train.steps = 1500
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.optim.name = "adamw"
  config.optim.lr = 2e-3
  config.optim.warmup_steps = 50
  config.evals.test = dict(kind="classifier", every=500, split="test", batch_size=512)
  if "mlp" in variants:
    config.model.arch = "mlp"
    config.model.hidden = (256, 128)
  if "fashion_mnist" in variants:
    config.data.dataset = "fashion_mnist"
    config.train.steps = 1000
    # the enrollment encoder's features (configs/enroll.py:real reads them; see the evaluator)
    config.evals.embeddings = dict(
      kind="classifier_embeddings",
      every=0,
      splits=("test",),
      batch_size=512,
      num_images=1000,
      views=8,
      shift=2,
      noise=0.1,
      seed=0,
    )
  if "tiny" in variants:
    config.train.steps = 40
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.evals.test.every = 20
  return config
