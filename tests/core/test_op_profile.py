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
  module = _op_profile.module_name(hlo)

  def op(name, dur, ph="X", of=module):
    return dict(ph=ph, name=name, dur=dur, args=dict(hlo_module=of, hlo_op=name))

  events = [
    op(matmul, 300.0),  # microseconds
    op(matmul, 100.0),
    op(other, 200.0),
    dict(ph="X", name="ThunkExecutor::Execute", dur=5000.0),  # the runtime's, not an op
    op(matmul, 9999.0, ph="i"),  # not a complete event
    op(matmul, 7777.0, of="jit_another_program"),  # an op of another program in the trace
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
  assert result["unmatched_ms"] == 0.0
  events.append(op("an_op_no_instruction_has", 600.0))  # a gap in the parsing shows
  assert _op_profile.breakdown(hlo, events, steps=2)["unmatched_ms"] == pytest.approx(0.3)
  two_devices = _op_profile.breakdown(hlo, events, steps=1, devices=2)  # each ran both steps' ops
  assert two_devices["categories"]["matmul"]["ms"] == pytest.approx(0.2)


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
  assert len(row["ops"]) <= 40 and row["ops_total"] >= len(row["ops"])  # the slowest kept


def _toy(x, w, key):
  """A scan (a while loop), an argmax (a multi-output fusion with a tuple shape), random numbers
  and a conditional: the control flow and op kinds of a real step."""

  def body(c, _):
    return jnp.tanh(c @ w), None

  y, _ = jax.lax.scan(body, x, None, length=5)
  idx = jnp.argmax(y, axis=-1)
  noise = jax.random.normal(key, y.shape)
  return jax.lax.cond(idx[0] > 3, lambda: y + noise, lambda: y - noise), idx


def test_a_traced_program_with_loops_branches_and_tuple_fusions_is_fully_accounted_for(tmp_path):
  """Every event of the program's own ops matches an instruction: the loop body's ops count once
  per iteration, the tuple-shaped argmax fusion is found, and nothing that looks like an op of
  this program is left unmatched."""
  import glob
  import gzip

  x, w, key = jnp.ones((64, 32)), jnp.full((32, 32), 0.01), jax.random.key(0)
  compiled = jax.jit(_toy).lower(x, w, key).compile()
  jax.block_until_ready(compiled(x, w, key))
  jax.profiler.start_trace(str(tmp_path), create_perfetto_trace=True)
  for _ in range(3):
    jax.block_until_ready(compiled(x, w, key))
  jax.profiler.stop_trace()
  (path,) = glob.glob(str(tmp_path / "**" / "perfetto_trace.json.gz"), recursive=True)
  trace = json.load(gzip.open(path))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  result = _op_profile.breakdown(compiled.as_text(), events, steps=3)
  assert result["unmatched_ms"] <= 0.05 * result["op_ms"], result["unmatched"]
  by_name = {op["name"]: op for op in result["ops"]}
  (matmul,) = [op for op in result["ops"] if op["category"] == "matmul"]
  assert matmul["executions_per_step"] == 5  # the scan's body, once per iteration
  assert matmul["flops"] == 5 * 2 * 64 * 32 * 32
  instrs = _op_profile.parse_hlo(compiled.as_text())
  tuple_fusions = [n for n, i in instrs.items() if i.opcode == "fusion" and i.shape.startswith("(")]
  assert tuple_fusions and all(n in by_name for n in tuple_fusions)  # the argmax's (value, index)


_SMALL_CALL_HLO = """HloModule m

%body (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %t = f32[4]{0} tanh(%p)
}

%cond (c: f32[4]) -> pred[] {
  %c = f32[4]{0} parameter(0)
  ROOT %k = pred[] constant(false)
}

%step (r: f32[4]) -> f32[4] {
  %r = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} exponential(%r)
}

%loop (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  ROOT %w = f32[4]{0} while(%q), condition=%cond, body=%step
}

ENTRY %main (a: f32[4]) -> (f32[4], f32[4]) {
  %a = f32[4]{0} parameter(0)
  %small = f32[4]{0} call(%a), to_apply=%loop, frontend_attributes={xla_cpu_small_call="true"}
  %large = f32[4]{0} call(%a), to_apply=%body
  ROOT %out = (f32[4]{0}, f32[4]{0}) tuple(%small, %large)
}
"""


def test_a_small_call_is_one_op_and_a_large_call_only_wraps_its_body():
  """XLA's CPU backend runs a call marked xla_cpu_small_call as one op (one trace event), its body
  and the loop inside it included; another call is control flow around its body's own events."""
  kinds = _op_profile.classify(_op_profile.parse_hlo(_SMALL_CALL_HLO))
  assert kinds["small"][0] == "elementwise/reduce"  # the exponential of its loop's body
  assert "w" not in kinds and "e" not in kinds  # run inside the small call, no events of their own
  assert "large" not in kinds and kinds["t"][0] == "elementwise/reduce"
  instrs = _op_profile.parse_hlo(_SMALL_CALL_HLO)
  assert instrs["small"].calls() == ["loop"] and instrs["w"].calls() == ["cond", "step"]
  assert _op_profile.parse_hlo(_SMALL_CALL_HLO)["out"].shape == "(f32[4]{0}, f32[4]{0})"


def test_the_estimate_for_all_cores_splits_one_cores_work_and_rates_it_on_the_step_flops():
  cats = lambda mm, dm, ew: {  # noqa: E731
    "matmul": {"ms": mm},
    "data movement": {"ms": dm},
    "elementwise/reduce": {"ms": ew},
    "convolution": {"ms": 0.0},
  }
  one_core = dict(
    categories=cats(50.0, 6.0, 14.0),
    isolated_dot_ms=40.0,
    cpu_count=2,
    step_flops=3e9,
    matmul_peak_flops=100e9,
    commit="abc1234",
  )
  whole = dict(one_core, matmul_peak_flops=200e9)
  lines = _op_profile.core_estimate_lines({"m@1dev": whole, "m@one_core": one_core})
  assert len(lines) == 3  # header, rule, the one config with a one-core row
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  # (40 + 6 + 14) / 2 = 30 ms; 3 GFLOP / 30 ms = 100 GFLOP/s = 50% of the whole machine's peak;
  # 50% of 200 GFLOP/s needs 3 GFLOP / 100 GFLOP/s = 30 ms
  # left out: the matmul fusions' 50 ms in the step beyond their dots' 40 ms alone
  assert cells == ["m", "40.0 + 20.0", "10.0", "2", "30.0", "3.00", "200", "50%", "30.0", "abc1234"]
