"""Set Transformer amortized clustering of 2-D 4-Gaussian mixtures (Lee et al., ICML 2019, §5.3).

    python launch/train.py --config=configs/set_clustering.py --config.cpu_devices=2
    python launch/train.py --config=configs/set_clustering.py:paper --config.train.steps=5000

The default is the authors' reference run.py: ISAB(2->128, 4 heads, 32 inducing points) ->
ISAB(128) -> PMA(k=4) -> SAB -> SAB -> Linear(128->4), 423,172 parameters (`reference` attention
mode); 10 sets per step, one set size n ~ U{300..599} per step (sets padded to 599 and masked, one
compiled program); Adam, lr 1e-3 times 0.1 from step 25k (run.py; the paper: 1e-4 after 35k),
50k steps; the generator's pi ~ Dir(1), mu ~ U(-4, 4)^2, sigma = 0.3.

What a run shows: `test/ll` (LL0 per data point on 100 fixed batches of 10 evaluation sets),
`test/ll1` (after one EM step), `test/oracle` (the generating mixture) and `test/gap` = oracle - ll.
Paper (supp. Table 5): ISAB(32)+PMA LL0 -1.4963 +- 0.0064 against an oracle of -1.4726.
How long on a 2-core CPU: about 20 steps/s with `--config.cpu_devices=2` (one replica per core)
after a ~10 s compile, so the full 50k-step run takes about 45 minutes (43 in one run); one
evaluation (100 batches of 10 sets of 300-599 points) takes 2-20 s. test/ll should approach the
oracle (a short run, `--config.train.steps=3000`, gave about -1.86). Measured results, steps/s
and the paper comparison: docs/set_tasks.md.

Variants (comma-separated):
  paper      the paper's choices where they differ from run.py: per-head sqrt(d_head) scaling,
             pre-LayerNorm, rFF on PMA (`mode='paper'`), one decoder SAB and a diagonal-covariance
             head (1 + 2*2 outputs per cluster, supp. Table 4).
  sab        SAB x2 encoder instead of ISAB x2.
  deepsets   the rFF + pooling baseline (4 x Linear(128), max-pooling).
  tiny       a tiny model on small sets for a few steps, for tests.
"""

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import sets
from jaxrepr.methods import set_tasks

VARIANTS = ("paper", "sab", "deepsets", "tiny")


def get_config(arg: str | None = None):
  variants = config_variants.parse(arg, VARIANTS, "configs/set_clustering.py")
  config = config_lib.base_config()
  config.method = "set_tasks"
  config.data = sets.default_config("mog")
  config.model = set_tasks.default_model_config("mog")
  config.train.update(dict(steps=50000, batch_size=10, log_every=100, checkpoint_every=2000))
  # run.py: torch.optim.Adam(lr=1e-3), no weight decay, no clipping, no warm-up
  config.optim.update(
    dict(
      name="adam",
      lr=1e-3,
      schedule="step",
      decay_at=(25000,),
      decay_factor=0.1,
      warmup_steps=0,
      weight_decay=0.0,
      clip_norm=0.0,
    )
  )
  config.evals.test = dict(kind="set_tasks", every=5000, num_batches=100, batch_size=10)

  if "paper" in variants:
    config.model.update(dict(mode="paper", num_decoder_sabs=1, head="diagonal"))
  if "sab" in variants:
    config.model.encoder = "sab"
  if "deepsets" in variants:
    config.model.arch = "deepsets"
  if "tiny" in variants:
    config.data.update(dict(min_size=20, max_size=40))
    config.model.update(dict(dim_hidden=16, num_inds=4))
    config.train.update(dict(steps=2, batch_size=4, log_every=1, checkpoint_every=0))
    config.evals.test.update(dict(every=0, num_batches=2, batch_size=4))
  return config
