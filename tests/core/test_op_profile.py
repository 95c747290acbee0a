"""launch/profile_step.py: the compiled step's ops joined with its trace. Matmuls are found in the
HLO with their FLOPs, layout-only ops are data movement, times are per step, and the tool run on a
real config accounts for the step's time and its matmul FLOPs."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from tests.core.helpers import REPO

from launch import _op_profile


def _hlo(f, *args) -> str:
  return jax.jit(f).lower(*args).compile().as_text()


def _step(x, w):
  """A matmul, a transpose that XLA must materialise, and a softmax (elementwise/reduce)."""
  y = x @ w
  return jax.nn.softmax(y, axis=-1), jnp.transpose(y) * 1.0


def test_dots_are_found_with_their_shapes_and_flops_and_layout_ops_are_data_movement():
  x, w = jnp.ones((96, 64)), jnp.ones((64, 80))
  kinds = _op_profile.classify(_op_profile.parse_hlo(_hlo(_step, x, w)))
  dots = [d for cat, ds in kinds.values() if cat == "matmul" for d in ds]
  assert len(dots) == 1
  (dot,) = dots
  assert (dot.lhs, dot.rhs) == ((96, 64), (64, 80))
  assert (dot.lhs_contracting, dot.rhs_contracting) == ((1,), (0,))
  assert dot.flops == 2 * 96 * 64 * 80
  categories = {cat for cat, _ in kinds.values()}
  assert "elementwise/reduce" in categories  # the softmax's exp and sums


def test_a_batched_dot_counts_its_batch_and_contracted_sizes():
  a, b = jnp.ones((7, 12, 32)), jnp.ones((7, 40, 32))
  hlo = _hlo(lambda a, b: jnp.einsum("bqd,bkd->bqk", a, b), a, b)
  (dot,) = [d for _, ds in _op_profile.classify(_op_profile.parse_hlo(hlo)).values() for d in ds]
  assert dot.flops == 2 * 7 * 12 * 40 * 32
  assert (dot.lhs_batch, dot.rhs_batch) == ((0,), (0,))


def test_a_transpose_alone_is_data_movement():
  hlo = _hlo(lambda x: jnp.transpose(x, (1, 0, 2)) + 0.0, jnp.ones((30, 40, 50)))
  kinds = _op_profile.classify(_op_profile.parse_hlo(hlo))
  assert {cat for cat, _ in kinds.values()} <= {"data movement"}


def test_breakdown_sums_the_trace_per_step_and_rates_the_matmuls():
  x, w = jnp.ones((96, 64)), jnp.ones((64, 80))
  hlo = _hlo(_step, x, w)
  kinds = _op_profile.classify(_op_profile.parse_hlo(hlo))
  (matmul,) = [n for n, (cat, _) in kinds.items() if cat == "matmul"]
  other = next(n for n, (cat, _) in kinds.items() if cat != "matmul")
  events = [
    dict(ph="X", name=matmul, dur=300.0),  # microseconds
    dict(ph="X", name=matmul, dur=100.0),
    dict(ph="X", name=other, dur=200.0),
    dict(ph="X", name="ThunkExecutor::Execute", dur=5000.0),  # not an op of the step
    dict(ph="i", name=matmul, dur=9999.0),  # not a complete event
  ]
  result = _op_profile.breakdown(hlo, events, steps=2)
  cats = result["categories"]
  assert cats["matmul"]["ms"] == pytest.approx(0.2)
  assert result["op_ms"] == pytest.approx(0.3)
  assert cats["matmul"]["share"] == pytest.approx(2 / 3)
  assert cats["matmul"]["flops"] == pytest.approx(2 * 96 * 64 * 80)  # per step: 2 runs / 2 steps
  assert cats["matmul"]["flops_per_s"] == pytest.approx(2 * 96 * 64 * 80 / 0.2e-3)
  dots = _op_profile.isolated_dots(result["ops"])
  assert list(dots.values()) == [1.0]


@pytest.mark.slow
def test_profile_step_accounts_for_a_real_steps_time_and_matmul_flops(tmp_path):
  """The tool on the classifier's MLP: on one device the ops add up to about the step's wall time,
  the matmuls found carry most of the FLOPs XLA's cost analysis counts for the step, and the rows
  land in profiles.json."""
  cmd = [
    sys.executable,
    os.path.join(REPO, "launch", "profile_step.py"),
    f"--config={os.path.join(REPO, 'configs', 'classifier.py')}:mlp",
    "--config.train.batch_size=512",
    "--config.cpu_devices=1",
    "--steps=5",
    "--warmup=2",
    f"--out={tmp_path}",
    "--name=mlp",
  ]
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")
  res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  row = json.load(open(tmp_path / "profiles.json"))["mlp"]
  assert 0.3 * row["step_ms"] < row["op_ms"] < 1.5 * row["step_ms"]
  matmul = row["categories"]["matmul"]
  assert matmul["ms"] > 0 and row["isolated_dot_ms"] > 0
  assert set(row["categories"]) == set(_op_profile.CATEGORIES)
  # an MLP's FLOPs are its matmuls' (forward and backward) plus a few elementwise ones
  assert 0.8 * row["xla_flops_per_device"] < matmul["flops"] <= row["xla_flops_per_device"]
  assert "mlp:" in res.stdout and "GFLOP/s" in res.stdout
  assert row["command"].startswith("python launch/profile_step.py --config=configs/classifier.py")
