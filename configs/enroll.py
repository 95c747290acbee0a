"""Open-set enrollment with a SetTransformer (Basoc et al. 2025, arXiv 2505.02815).

    python launch/train.py --config=configs/enroll.py                # evaluations (a) and (b)
    python launch/train.py --config=configs/enroll.py:reverse        # the two sources swapped
    python launch/enroll_report.py --runs=runs/enroll,runs/enroll_reverse --out=docs/enroll
    python launch/train.py --config=configs/enroll.py:extra          # the probe as an extra element
    # (c) needs a real-image encoder first, a CNN on Fashion-MNIST (about 3 minutes on a 2-core
    # CPU; the data from Debian's dataset-fashion-mnist package, or any directory of its IDX files
    # with --config.data.data_dir=DIR on the classifier's command), then the `real` variant:
    python launch/train.py --config=configs/classifier.py:fashion_mnist
    python launch/train.py --config=configs/enroll.py:real
    # your own embeddings (`embeddings` (M, d), `labels` (M,), optional `group` (M,)): train on
    # 75% of its identities, evaluation (a) on the other 25%
    python launch/train.py --config=configs/enroll.py --config.data.source.kind=npz \
        --config.data.source.path=/path/to/embeddings.npz

Training: episodes from a synthetic source, 600 vMF identities (d = 64, kappa = 48, 16 samples each;
the other 200 identities are held out), n_id in [5, 40] gallery identities and 1-8 walks each drawn
per episode, K = 16 nearest gallery samples (cosine distance), half known probes. The model reads
dimension-free relational features (jaxrepr/methods/enroll/features.py), so it runs unchanged on
sources of any dimension: SAB x2 (64 wide, 4 heads, paper mode) -> PMA(k=1) -> Linear -> 1 logit,
binary cross-entropy, Adam 1e-3, batch 128.

Evaluators (jaxrepr/evaluators/enroll.py; each compares the SetTransformer with the NN
threshold and the kNN vote tuned on training episodes and frozen, and with both re-tuned on the
test source (oracles); each also sweeps the known fraction of probes at test time over 0.1, 0.3,
0.5, 0.7, 0.9 (the oracles re-tuned at each) and writes enroll_<tag>_step<N>.{json,png} and
_prior.png into the workdir):
  same     (a) the 200 held-out identities of the training source.
  shifted  (b) another synthetic source: d = 32, kappa = 48, another seed (1,000 identities).
  real     (c) (variant `real`) penultimate features (128-d) of the Fashion-MNIST CNN above
           (config.evals.real.source.workdir, default runs/classifier_fashion_mnist) on the test
           images, one identity per image seen in 8 walks (random shifts of up to 2 pixels plus
           pixel noise 0.1): 1,000 identities (`identity='instance'`); same-class images are the
           hard negatives. `--config.evals.real.source.identity=class` uses the 10 classes as
           identities instead (galleries of at most 9 identities, a weak test). A missing encoder
           run or data set stops the run before its first step, naming the command above.
With `reverse` the model trains on the source of (b) and (b) is the default's training source
(all 800 identities), so cross-source transfer is measured in both directions.
`same` follows the training source (its fields refer to config.data.source's), so overriding
config.data.source (another dimension, an .npz) moves evaluation (a) with it.
What a run shows: for each evaluation, accuracy on 2,048 episodes per source (AUC beside it) of the
SetTransformer (known iff logit > 0) and of the four baselines, and accuracy/F1 at each known
fraction, in the metrics and in enroll_<tag>_step<N>.{png,json}; launch/enroll_report.py tabulates
and plots them for several runs. Rerunning a finished run's command evaluates its last checkpoint
again with the current evaluators. Measured results (evaluation (c) and the `absolute` ablation
included) and the paper comparison: docs/enroll.md. The default features are log-ratios of
distances (`scale='ratio'`); `absolute` uses absolute distances, which transfer worse.

Variants (comma-separated; absolute and scaled exclude each other):
  reverse  train on the source of evaluation (b) (vMF d = 32, seed 1) and evaluate on the default
           training source (vMF d = 64, seed 0) as (b).
  extra    the probe as an extra, flagged set element described by its distance profile.
  raw      raw embeddings [g, p, g - p, d, same-id, walks] instead of relational features (the
           model then cannot run on the 32-d source: `shifted` reports the baselines only).
  absolute relational features with absolute distances (scale='none') instead of log-ratios.
  scaled   absolute distances divided by the context's mean pairwise distance (scale='context').
  isab     ISAB (8 inducing points) x2 encoder instead of SAB x2.
  real     add evaluation (c) on the Fashion-MNIST CNN's features (needs that classifier run).
  tiny     a tiny model and source for a few steps, for tests (with `real`: set the real source's
           workdir).
"""

import ml_collections

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import embeddings
from jaxrepr.methods import enroll

VARIANTS = ("reverse", "extra", "raw", "absolute", "scaled", "isab", "real", "tiny")


def get_config(arg: str | None = None):
  # absolute and scaled both set config.model.scale
  variants = config_variants.parse(
    arg, VARIANTS, "configs/enroll.py", exclusive=[("absolute", "scaled")]
  )
  config = config_lib.base_config()
  config.method = "enroll"
  config.data = embeddings.default_config()
  # The two synthetic sources of the cross-source protocol: the model trains on one (its held-out
  # identities are evaluation `same`) and is evaluated on the other (`shifted`) with nothing
  # re-tuned; `reverse` swaps them, so the transfer is measured in both directions.
  src_a = embeddings.source_config(
    "vmf", dim=64, kappa=48.0, num_identities=800, samples_per_identity=16, seed=0
  )
  src_b = embeddings.source_config(
    "vmf", dim=32, kappa=48.0, num_identities=1000, samples_per_identity=16, seed=1
  )
  if "tiny" in variants:
    src_a.update(dict(dim=8, num_identities=40, samples_per_identity=6, kappa=16.0))
    src_b.update(dict(dim=5, num_identities=20, samples_per_identity=5))
  train_src, other_src = (src_b, src_a) if "reverse" in variants else (src_a, src_b)
  config.data.source = train_src
  config.data.source.update(dict(split="train", test_fraction=0.25))
  other_src.split = "all"
  config.model = enroll.default_model_config()
  config.train.update(dict(steps=3000, batch_size=128, log_every=100, checkpoint_every=1000))
  config.optim.update(
    dict(
      name="adam",
      lr=1e-3,
      schedule="warmup_cosine",
      warmup_steps=100,
      weight_decay=0.0,
      clip_norm=1.0,
    )
  )
  grid = dict(n_ids=(5, 10, 20, 40), walks=(1, 2, 4, 8))
  common = dict(
    kind="enroll",
    every=0,
    episodes_per_cell=128,
    tune_episodes=2048,
    batch_size=256,
    # the test-time prior sweep: the same episodes with the known/new label redrawn at each p
    known_fractions=(0.1, 0.3, 0.5, 0.7, 0.9),
  )
  # (a) the held-out identities of the training source: every field but the split refers to the
  # training source's, so an override of config.data.source.* moves this evaluation with it.
  train_src = config.data.source
  same = ml_collections.ConfigDict({k: train_src.get_ref(k) for k in train_src if k != "split"})
  same.split = "test"
  config.evals.same = dict(common, source=same, tag="same", **grid)
  config.evals.shifted = dict(common, source=other_src, tag="shifted", **grid)
  if "real" in variants:  # needs a classifier run (and its data set): not part of the default
    config.evals.real = dict(
      common,
      source=embeddings.source_config(
        "encoder",
        workdir="runs/classifier_fashion_mnist",
        data_split="test",
        identity="instance",
        num_images=1000,
        views=8,
        shift=2,
        noise=0.1,
        seed=0,
        split="all",
      ),
      tag="real",
      **grid,
    )

  if "extra" in variants:
    config.model.probe = "extra"
  if "raw" in variants:
    config.model.input = "raw"
  if "scaled" in variants:
    config.model.scale = "context"
  if "absolute" in variants:
    config.model.scale = "none"
  if "isab" in variants:
    config.model.encoder = "isab"
  if "tiny" in variants:
    config.data.update(dict(n_id_range=(2, 6), walks_range=(1, 3), context_size=4))
    config.model.update(dict(dim_hidden=8, num_heads=2, num_blocks=1))
    config.train.update(dict(steps=2, batch_size=8, log_every=1, checkpoint_every=0))
    tiny = dict(n_ids=(2, 4), walks=(1, 3), episodes_per_cell=4, tune_episodes=16, batch_size=8)
    config.evals.same.update(tiny)
    config.evals.shifted.update(tiny)
    if "real" in config.evals:
      config.evals.real.update(tiny)
      config.evals.real.source.update(dict(num_images=20, views=4))
  return config
