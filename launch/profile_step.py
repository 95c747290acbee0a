"""Where a config's train step spends its time, op by op, and what its matmuls cost by themselves.

    python launch/profile_step.py --config=configs/set_clustering.py --config.cpu_devices=1 \
        --steps=20 --batches=20
    python launch/profile_step.py --config=configs/lpn.py:pattern,grad0 --config.cpu_devices=1 \
        --steps=3

It builds the same train step as launch/train.py and launch/bench.py, traces --steps steps with
jax.profiler after --warmup untimed ones, and joins the trace with the compiled HLO
(launch/_op_profile.py): the step's op time by category (matmul, convolution, data movement,
elementwise/reduce), the FLOP rate its matmuls reach inside the step, and `same dots alone`: every
dot of the step timed by itself (lax.dot_general at the same shapes and dimension numbers,
launch/_matmul_timing.py, less the cost of dispatching an empty jitted call) and summed over the
step's executions: an estimate of what the step's matmuls cost at this machine's dot speed for
these shapes with nothing fused, nothing else to do and the default operand layouts. Beside it, the
machine's peak (a 2048^2 matmul), as in bench.py's utilisation column, and the step's FLOPs as
bench.py counts them. Run under `taskset -c 0` and named `<name>@one_core`, a profile on one core
also gives the estimate for all cores in a second table (launch/_op_profile.py,
`core_estimate_lines`): that core's work split perfectly over the host's cores.

Times are per device: with several CPU devices each device runs its share of the batch on its own
thread and the trace's events are divided by the device count, but the trace also slows such a step
far more than a one-device step, so `--config.cpu_devices=1` is the profile to read. The trace
covers only compiled work: host-side input is drawn before timing (--batches distinct batches,
cycled). Ops of the step that match no classified instruction are counted apart and warned about
when they exceed 5% of the op time.

Rows are written to --out/profiles.json (keyed by --name), with the slowest KEEP_OPS ops (category,
time, FLOPs, the jax source line of `op_name`, the time of its dots alone); when --out is the
checkout's bench/, the table between the `op-profile` markers of docs/benchmarks.md is rewritten
from all rows. The slowest --top ops are printed.
"""

import glob
import gzip
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from launch import _op_profile  # noqa: E402
from launch._matmul_timing import (  # noqa: E402
  call_overhead_seconds,
  dot_seconds,
  matmul_peak_flops,
)

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_NAME = flags.DEFINE_string("name", None, "Row name (default: the config name).")
_STEPS = flags.DEFINE_integer("steps", 10, "Traced steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untraced steps after compilation.")
_BATCHES = flags.DEFINE_integer("batches", 1, "Distinct batches drawn first and cycled through.")
_TOP = flags.DEFINE_integer("top", 15, "Slowest ops to print.")
_OUT = flags.DEFINE_string("out", "bench", "Directory for profiles.json.")
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEP_OPS = 40  # the slowest ops kept per row in profiles.json (a step has thousands)
DOCS_PAGE = os.path.join(_CHECKOUT, "docs", "benchmarks.md")
BLOCK = "op-profile"


def _trace_events(logdir: str) -> list[dict]:
  (path,) = glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(path) as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def profile(config, steps: int, warmup: int, num_batches: int) -> dict:
  import jax

  from jaxrepr import step_cost, train
  from jaxrepr.errors import ConfigError

  if steps < 1 or num_batches < 1:
    raise ConfigError(f"--steps and --batches must be >= 1, got {steps} and {num_batches}")
  run = train.build(config)
  batches = [run.next_batch() for _ in range(num_batches)]
  with jax.set_mesh(run.mesh):
    compiled = run.train_step.lower(run.state, batches[0], run.train_rng).compile()
    state = run.state
    for i in range(warmup):
      state, _ = compiled(state, batches[i % num_batches], run.train_rng)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as logdir:
      jax.profiler.start_trace(logdir, create_perfetto_trace=True)
      t0 = time.perf_counter()
      for i in range(steps):
        state, metrics = compiled(state, batches[(warmup + i) % num_batches], run.train_rng)
      jax.block_until_ready((state, metrics))
      step_s = (time.perf_counter() - t0) / steps
      jax.profiler.stop_trace()
      events = _trace_events(logdir)
  devices = run.mesh.devices.size
  result = _op_profile.breakdown(compiled.as_text(), events, steps, devices)
  if not result["ops"]:
    raise RuntimeError("the trace holds no XLA op of the compiled step (is this JAX's profiler?)")
  if result["unmatched_ms"] > 0.05 * result["op_ms"]:
    print(
      f"warning: {result['unmatched_ms']:.1f} ms per step of events that look like XLA ops match "
      f"no instruction of the compiled step (e.g. {result['unmatched'][:3]}): the categories "
      "leave them out",
      file=sys.stderr,
    )
  dots = _op_profile.isolated_dots(result["ops"])
  overhead = call_overhead_seconds()
  alone = {d: max(dot_seconds(d) - overhead, 0.0) for d in dots}
  result.update(
    step_ms=1e3 * step_s,
    devices=devices,
    call_overhead_ms=1e3 * overhead,
    # how loaded the shared machine was: the 1-minute load average when the trace ended
    load_average=os.getloadavg()[0],
    measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    cpu_count=os.cpu_count(),
    # the step's FLOPs as launch/bench.py counts them (every op, the loops' bodies at their count)
    step_flops=step_cost.step_flops(config),
    isolated_dot_ms=1e3 * sum(alone[d] * n for d, n in dots.items()),
    # XLA's count for one device's partition; a loop body (a while op) counted once
    xla_flops_per_device=step_cost.compiled_flops(compiled),
    matmul_peak_flops=matmul_peak_flops(2048, config.precision),
    precision=config.precision,
    jax_version=jax.__version__,
  )
  for op in result["ops"]:
    op["alone_ms"] = 1e3 * sum(
      alone[_op_profile.Dot.from_dict(d)] * op["executions_per_step"] for d in op["dots"]
    )
  return result


def _print(name: str, p: dict, top: int) -> None:
  c = p["categories"]
  print(
    f"{name}: step {p['step_ms']:.1f} ms, ops {p['op_ms']:.1f} ms on {p['devices']} device(s); "
    + ", ".join(f"{k} {v['ms']:.1f} ms ({100 * v['share']:.0f}%)" for k, v in c.items())
    + f"; matmuls {c['matmul']['flops'] / 1e9:.2f} GFLOP at "
    f"{c['matmul']['flops_per_s'] / 1e9:.1f} GFLOP/s, the same dots alone "
    f"{p['isolated_dot_ms']:.1f} ms; matmul peak {p['matmul_peak_flops'] / 1e9:.0f} GFLOP/s"
  )
  for op in p["ops"][:top]:
    rate = op["flops"] / (op["ms"] / 1e3) / 1e9 if op["flops"] and op["ms"] else 0.0
    alone = f" (alone {op['alone_ms']:.2f} ms, {rate:.0f} GFLOP/s in step)" if op["flops"] else ""
    print(
      f"  {op['ms']:7.2f} ms x{op['executions_per_step']:g} {op['category']:18s} "
      f"{op['name']}{alone}  {op['source'][-80:]}"
    )


def command_line(argv: list[str]) -> str:
  """This run's command as a user types it from the checkout's root, with the `taskset -c` prefix
  when the process may use only some of the host's cores (the one-core rows)."""
  import shlex

  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  prefix = f"taskset -c {','.join(map(str, cpus))} " if cpus and len(cpus) < os.cpu_count() else ""
  args = [a.replace(_CHECKOUT + os.sep, "") for a in argv[1:]]
  return prefix + "python launch/profile_step.py " + " ".join(shlex.quote(a) for a in args)


def _record(name: str, result: dict) -> None:
  from launch import _doc_tables

  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, "profiles.json")
  profiles = json.load(open(path)) if os.path.exists(path) else {}
  profiles[name] = trimmed(
    dict(result, commit=_doc_tables.commit(), command=command_line(sys.argv))
  )
  profiles = dict(sorted(profiles.items()))
  with open(path, "w") as f:
    json.dump(profiles, f, indent=1, sort_keys=True)
  written = [path]
  if os.path.realpath(_OUT.value) == os.path.realpath(os.path.join(_CHECKOUT, "bench")):
    write_docs_block(profiles, DOCS_PAGE)
    written.append(DOCS_PAGE)
  print(f"wrote {', '.join(written)}", flush=True)


def trimmed(row: dict) -> dict:
  """The row with only its KEEP_OPS slowest ops (the categories and sums cover all of them)."""
  ops = sorted(row["ops"], key=lambda o: -o["ms"])
  return dict(row, ops=ops[:KEEP_OPS], ops_total=row.get("ops_total", len(ops)))


def write_docs_block(profiles: dict, page: str) -> None:
  from launch import _doc_tables

  commits = ", ".join(
    f"commit `{c}`" for c in dict.fromkeys(p["commit"] for p in profiles.values())
  )
  head = [
    f"Written by launch/profile_step.py into bench/profiles.json and this table, one row per "
    f"command below, run from the checkout's root (rows measured at {commits}):",
    "",
    *(f"    {p['command']}" for p in profiles.values() if p.get("command")),
    "",
  ]
  estimate = _op_profile.core_estimate_lines(profiles)
  tail = (
    ["", "Estimated for all cores from the one-core rows:", "", *estimate]
    if len(estimate) > 2
    else []
  )
  body = "\n".join(head + _op_profile.table_lines(profiles) + tail)
  _doc_tables.write_block(page, BLOCK, body)


def main(argv):
  del argv
  from jaxrepr import host_memory

  host_memory.apply(_CONFIG.value)  # may restart the process: before anything else is loaded
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax

  jax.config.update("jax_enable_compilation_cache", False)
  from jaxrepr import config as config_lib, errors, parallel

  with errors.reported(flags.FLAGS.verbosity):
    layout = parallel.apply_cpu_layout(
      _CONFIG.value, multi_process=False, evaluator_lookup=config_lib.evaluator_class
    )
    print(layout.line(), file=sys.stderr, flush=True)
    name = _NAME.value or config_lib.config_name(
      config_flags.get_config_filename(flags.FLAGS["config"])
    )
    result = profile(_CONFIG.value, _STEPS.value, _WARMUP.value, _BATCHES.value)
    _print(name, result, _TOP.value)
    _record(name, result)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
