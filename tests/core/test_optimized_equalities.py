"""The core equalities hold with XLA's optimisations on, too.

The suite compiles with most XLA optimisations off (tests/conftest.py sets
JAX_DISABLE_MOST_OPTIMIZATIONS=1: the tiny models' cost is compilation). Fusion and layout passes
change float rounding and operation order, so an equality that holds unoptimised might not hold in
the programs users run. (SIGKILL + rerun = an uninterrupted run runs optimised in its own test,
tests/core/test_launch.py: its training runs are subprocesses already.) Each test below reruns one
of the suite's equality tests in a fresh pytest process with the optimisations on (the flag is read
when JAX starts, so it cannot be switched inside this process without reusing programs compiled the
other way). Tolerances are the rerun tests' own:
  1 vs 8 devices (trainer): losses rtol 2e-5, final parameters rtol 1e-4 / atol 1e-6;
  LPN key/value-cache decoding = full re-decoding: grids and shapes exact, logits 1e-4;
  blocked attention = plain attention: values atol 2e-6, gradients atol 5e-6 (structure masks:
  see tests/nn/test_attention.py).
"""

import os
import subprocess
import sys

import pytest

from tests.core.helpers import REPO

# Heavy: about a minute of one worker, which the default run (CI) cannot spare; the equalities
# themselves run there unoptimised. Run it with `-m heavy` after a change to XLA flags or numerics.
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

# One case of each parametrised test keeps this to one pytest process of about a minute.
EQUALITIES = [
  "tests/core/test_train.py::test_one_and_eight_devices_give_the_same_losses",
  "tests/methods/lpn/test_lpn_decode_search.py::test_kv_cache_decoding_equals_full_redecoding[learned]",
  "tests/nn/test_attention.py::test_blocked_matches_xla_values_and_gradients[6-13-11-True-264]",
  "tests/nn/test_attention.py::test_structure_equals_the_full_mask_values_and_gradients[624]",
]


def test_core_equalities_hold_with_xla_optimisations_on():
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-q",
      "-p",
      "no:cacheprovider",
      "-p",
      "no:xdist",
      "-rf",
      *EQUALITIES,
    ],
    env=env,
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
  assert f"{len(EQUALITIES)} passed" in res.stdout.splitlines()[-1], res.stdout[-2000:]
