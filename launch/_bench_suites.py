"""The fixed lists of benchmarks that `launch/bench.py --suite=...` runs (the layouts suite lives
with its runner in launch/_bench_layouts.py), and the config each row names."""

import os

# (row name, config file, variant, overrides): what `--suite=gpu` runs.
GPU_SUITE = (
  ("lpn_pattern_grad0_b128_bf16", "lpn.py", "pattern,grad0", {"precision": "bfloat16"}),
  ("lpn_pattern_grad1_b128_bf16", "lpn.py", "pattern,grad1", {"precision": "bfloat16"}),
  ("noprop_dt_all_blocks_mnist5k_bf16", "noprop.py", "dt,mnist5k", {"precision": "bfloat16"}),
  (
    "noprop_dt_one_block_mnist5k_bf16",
    "noprop.py",
    "dt,mnist5k",
    {"model.block_schedule": "sampled", "precision": "bfloat16"},
  ),
  # The paper's back-prop baseline (the ten blocks chained): its memory against DT's one block per
  # step is the paper's Table 2 comparison.
  (
    "noprop_backprop_chain_mnist5k_bf16",
    "noprop.py",
    "backprop,mnist5k",
    {"precision": "bfloat16"},
  ),
)


# (row name, config file, variant, overrides): what `--suite=replicas` runs, each as one run and as
# --replicas seeds in one program (jaxrepr/replicas.py), in interleaved rounds.
REPLICA_SUITE = (
  ("classifier_digits", "classifier.py", "", {}),
  ("noprop_dt_one_block_mnist5k", "noprop.py", "dt,mnist5k", {"model.block_schedule": "sampled"}),
  ("set_max", "set_max.py", "", {}),
  ("lpn_main_grad1", "lpn.py", "", {}),  # the main job (its batch 64), trained with Grad 1
  ("lpn_main_grad0", "lpn.py", "grad0", {}),
)


# What `--suite=gpu` also runs after GPU_SUITE: the small models of REPLICA_SUITE as one run and as
# --replicas seeds in one program, so that one call on a GPU fills both kinds of GPU rows.
GPU_REPLICA_SUITE = tuple(
  row
  for row in REPLICA_SUITE
  if row[0] in ("classifier_digits", "noprop_dt_one_block_mnist5k", "set_max")
)


def suite_config(file: str, variant: str, overrides: dict):
  """A config from configs/<file>:<variant> with dotted-key overrides."""
  import importlib.util

  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", file)
  spec = importlib.util.spec_from_file_location(f"bench_{file[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def selected(only: list[str] | None, suite: tuple) -> tuple:
  """The rows of `suite` that --only names (all without --only); an unknown name is an error."""
  if not only:
    return suite
  from jaxrepr.errors import ConfigError

  names = [row[0] for row in suite]
  unknown = sorted(set(only) - set(names))
  if unknown:
    raise ConfigError(f"--only: {', '.join(unknown)} not in the suite's rows ({', '.join(names)})")
  return tuple(row for row in suite if row[0] in only)
