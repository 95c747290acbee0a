"""Benchmark the train step of any config: speed, compile time, memory, FLOPs and utilisation.

    python launch/bench.py --config=configs/classifier.py
    python launch/bench.py --config=configs/lpn.py:pattern --name=grad1 \
        --config.model.train_latent.mode=gradient_ascent
    python launch/bench.py --suite=gpu      # one short call on a GPU node (see GPU_SUITE)

In one run it measures, for the config's real train step (same method, optimizer, batch and
shardings as launch/train.py):
  * compile seconds (lower + compile of the jitted step),
  * median step time and steps/s over --steps timed steps after --warmup steps (the same batch is
    reused so data loading is not timed; `--batches=K` draws K batches first and cycles through
    them, reporting the mean step time, for steps whose cost depends on the batch); the mean and
    the page faults per timed step are recorded too (`malloc_huge_pages`: whether malloc's large
    blocks got transparent huge pages, jaxrepr/host_memory.py),
  * peak device memory from `compiled.memory_analysis()` (arguments + outputs + temporaries -
    aliased/donated buffers) and the process's peak resident memory,
  * parameter bytes held by one device (divided by the fsdp degree for sharded leaves, see
    `--config.mesh.fsdp`),
  * FLOPs per step from `compiled.cost_analysis()` (one device's partition times the devices; for
    a config with the blocked attention or LPN's per-position search, counted on the same step
    without those loops, as XLA counts a loop body once),
  * the measured matmul peak of this machine in the step's compute dtype (`config.precision`;
    median of timed square matmuls) and the utilisation = achieved FLOP/s / that peak.
`--suite=gpu` runs GPU_SUITE instead of --config: the LPN pattern step (Grad 0 and Grad 1, batch
128), the NoProp-DT step (all blocks and one block per step) and the back-prop chain, all in
bfloat16, then the `--suite=replicas` comparison for the small models of GPU_REPLICA_SUITE, a few
timed steps each, so that the whole suite fits one short call; rows are named with the device kind.
`--layouts=1,auto` times the config in each CPU device layout (`config.cpu_devices`), each in its
own process, in interleaved rounds, rows `<name>@<n>dev`; `--suite=layouts` does so for every
config of launch/_bench_layouts.py's LAYOUT_SUITE, and docs/benchmarks.md compares the layouts.
`--against=DIR` (another checkout, e.g. an earlier commit's `git worktree`) times each of those
measurements with DIR's code and config too, in turn, rows `<name>_previous@<n>dev`, so that a
change is timed against the code before it under the same load (docs/benchmarks.md).
Results are appended to --out/results.json (keyed by --name) and the markdown table
--out/results.md is rewritten from all of them; when --out is the checkout's bench/ (the default,
run from the checkout's root), so is the table between the markers of docs/benchmarks.md.
"""

import json
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from launch._matmul_timing import matmul_peak_flops  # noqa: E402
from launch._bench_suites import (  # noqa: E402
  GPU_REPLICA_SUITE,
  GPU_SUITE,
  REPLICA_SUITE,
  selected,
  suite_config,
)
from launch._bench_tables import (  # noqa: E402, F401 (the tables' names, as bench.py's)
  _CHECKOUT,
  DOCS_MARKERS,
  DOCS_PAGE,
  fmt_bytes,
  table_lines,
  write_docs_table,
  write_table,
)

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_SUITE = flags.DEFINE_enum(
  "suite", None, ["gpu", "replicas", "layouts"], "Run a fixed list of benchmarks instead."
)
_REPLICAS = flags.DEFINE_integer(
  "replicas", 3, "--suite=replicas (and gpu): seeds trained as one program."
)
_ONLY = flags.DEFINE_list("only", None, "--suite: run only the suite's rows with these names.")
_ROUNDS = flags.DEFINE_integer(
  "rounds", 2, "--suite=replicas (and gpu), --layouts: interleaved rounds."
)
_LAYOUTS = flags.DEFINE_list(
  "layouts",
  None,
  "config.cpu_devices values to time the config in, each in its own process, in --rounds "
  "interleaved rounds (rows <name>@<n>dev); --suite=layouts: default 1,auto.",
)
_AGAINST = flags.DEFINE_string(
  "against", None, "Another checkout: --layouts (default auto) timed in both, interleaved."
)
_NAME = flags.DEFINE_string("name", None, "Row name (default: the config name).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_BATCHES = flags.DEFINE_integer(
  "batches",
  1,
  "Distinct batches drawn before timing and cycled through; above 1 the step time "
  "is the mean (throughput), for steps whose cost depends on the batch (set sizes under "
  "config.model.length_buckets).",
)
_OUT = flags.DEFINE_string("out", "bench", "Directory for results.json and results.md.")
_MATMUL_N = flags.DEFINE_integer("matmul_n", 2048, "Side of the square matmul for the peak.")
flags.register_validator(
  "config", lambda c: c is not None or flags.FLAGS.suite is not None, "give --config or --suite"
)


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  if m is None:
    return {}
  get = lambda k: int(getattr(m, k, 0) or 0)  # noqa: E731
  peak = (
    get("argument_size_in_bytes")
    + get("output_size_in_bytes")
    + get("temp_size_in_bytes")
    - get("alias_size_in_bytes")
  )
  return {
    "peak_bytes": peak,
    "temp_bytes": get("temp_size_in_bytes"),
    "argument_bytes": get("argument_size_in_bytes"),
    "donated_bytes": get("alias_size_in_bytes"),
  }  # state buffers reused in place


def _flops(compiled) -> float:
  from jaxrepr import step_cost

  return step_cost.compiled_flops(compiled)


def _plain_attention_flops(config, batch) -> float:
  """FLOPs of the same step without its memory-saving loops (jaxrepr/step_cost.py, loop_free)."""
  import jax

  from jaxrepr import step_cost, train

  run = train.build(step_cost.loop_free(config))
  with jax.set_mesh(run.mesh):
    return _flops(run.train_step.lower(run.state, batch, run.train_rng).compile())


def bench(config, steps: int, warmup: int, matmul_n: int, num_batches: int = 1) -> dict:
  import jax
  import numpy as np

  from jaxrepr import host_memory, parallel, step_cost, train
  from jaxrepr.errors import ConfigError
  from jaxrepr.train_step import param_count

  if num_batches < 1:
    raise ConfigError(f"--batches must be >= 1, got {num_batches}")
  run = train.build(config)
  batches = [run.next_batch() for _ in range(num_batches)]
  batch = batches[0]
  with jax.set_mesh(run.mesh):
    t0 = time.perf_counter()
    compiled = run.train_step.lower(run.state, batch, run.train_rng).compile()
    compile_s = time.perf_counter() - t0
    state = run.state
    for i in range(warmup):
      state, metrics = compiled(state, batches[i % num_batches], run.train_rng)
    jax.block_until_ready(state)
    times = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu_before = time.process_time()
    for i in range(steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batches[(warmup + i) % num_batches], run.train_rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
    # page faults: a CPU step that maps its buffers anew each time shows them
    # (jaxrepr/host_memory.py)
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / steps
    # CPU seconds of this process per step: robust to other jobs on a shared machine
    cpu_s_per_step = (time.process_time() - cpu_before) / steps
  # one batch: the median resists noise; varied batches: the mean is the throughput
  step_s = float(np.median(times) if num_batches == 1 else np.mean(times))
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before any other compile
  flops = _flops(compiled)
  if step_cost.has_loops(config):
    flops = _plain_attention_flops(config, batch)
  # XLA counts a conditional as its largest branch: with length buckets the count is that of the
  # fully padded step, an upper bound of the work done, and so is the utilisation
  flops_upper_bound = bool(config.get("model") and config.model.get("length_buckets", 1) > 1)
  peak = matmul_peak_flops(matmul_n, config.precision)
  devices = run.mesh.devices.size
  flops *= devices  # cost analysis counts one device's partition of the step
  # Simulated CPU devices share the host's cores, which the one measured matmul already uses.
  peak_devices = 1 if jax.default_backend() == "cpu" else devices
  return dict(
    params=param_count(state.params),
    batch_size=config.train.batch_size,
    devices=devices,
    fsdp=int(run.mesh.shape["fsdp"]),
    param_bytes_per_device=parallel.bytes_per_device(state.params),
    state_bytes_per_device=parallel.bytes_per_device(state),
    device_kind=jax.devices()[0].device_kind,
    platform=jax.default_backend(),
    host=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    compile_s=compile_s,
    step_s=step_s,
    steps_per_s=1.0 / step_s,
    distinct_batches=num_batches,
    step_s_min=float(np.min(times)),
    step_s_max=float(np.max(times)),
    step_s_mean=float(np.mean(times)),
    page_faults_per_step=faults_per_step,
    cpu_s_per_step=cpu_s_per_step,
    malloc_huge_pages=host_memory.huge_pages_active(),
    transparent_huge_pages=host_memory.transparent_huge_pages_mode(),
    flops_per_step=flops,
    achieved_flops=flops / step_s,
    flops_upper_bound=flops_upper_bound,
    matmul_peak_flops=peak * peak_devices,
    utilisation=flops / step_s / (peak * peak_devices),
    peak_rss_bytes=peak_rss,
    precision=config.precision,
    **_memory(compiled),
    jax_version=jax.__version__,
    loss=float(np.mean(metrics["loss"])),  # the mean over replicas (jaxrepr/replicas.py)
    commit=_commit(),
  )


def _commit() -> str:
  """The measured code's short commit hash ('+' when its code has changes since, not counting the
  bench's own outputs: jaxrepr/provenance.py), or '?'."""
  from launch import _doc_tables

  return _doc_tables.commit()


def main(argv):
  del argv
  if not _SUITE.value:
    from jaxrepr import host_memory

    host_memory.apply(_CONFIG.value)  # may restart the process: before anything else is loaded
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax

  # The compile seconds reported are compiles: no program is read from a persistent cache that a
  # user's JAX_COMPILATION_CACHE_DIR would point at.
  jax.config.update("jax_enable_compilation_cache", False)
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    _bench_all()


def _bench_all():
  from jaxrepr import config as config_lib
  from jaxrepr.errors import ConfigError

  against = _AGAINST.value
  if against and _SUITE.value not in (None, "layouts"):
    raise ConfigError(f"--against times --config or --suite=layouts, not --suite={_SUITE.value}")
  if against and not os.path.isfile(os.path.join(against, "launch", "bench.py")):
    raise ConfigError(f"--against={against}: not a checkout of this project (no launch/bench.py)")
  if against and os.path.realpath(against) == os.path.realpath(_CHECKOUT):
    raise ConfigError(f"--against={against} is this checkout: give another one")
  if _SUITE.value == "replicas":
    _bench_replicas(selected(_ONLY.value, REPLICA_SUITE), suffix="")
    return
  if _SUITE.value == "layouts" or _LAYOUTS.value or _AGAINST.value:
    _bench_layouts_all()
    return
  if _SUITE.value:
    import jax

    kind = jax.devices()[0].device_kind.replace(" ", "_")
    rows = selected(_ONLY.value, GPU_SUITE + GPU_REPLICA_SUITE)
    runs = [
      (f"{name}_{kind}", suite_config(file, variant, overrides))
      for name, file, variant, overrides in (r for r in rows if r in GPU_SUITE)
    ]
  else:
    from jaxrepr import parallel

    layout = parallel.apply_cpu_layout(
      _CONFIG.value, multi_process=False, evaluator_lookup=config_lib.evaluator_class
    )
    print(layout.line(), file=sys.stderr, flush=True)  # as launch/train.py prints it
    runs = [
      (
        _NAME.value
        or config_lib.config_name(config_flags.get_config_filename(flags.FLAGS["config"])),
        _CONFIG.value,
      )
    ]
  for name, config in runs:
    _record(name, bench(config, _STEPS.value, _WARMUP.value, _MATMUL_N.value, _BATCHES.value))
  if _SUITE.value:  # gpu: then the replicas comparison of the small models, on the same device
    _bench_replicas(tuple(r for r in rows if r in GPU_REPLICA_SUITE), suffix=f"_{kind}")


def _bench_layouts_all():
  """Each config in every layout of --layouts, one process per measurement (_bench_layouts.py)."""
  from launch import _bench_layouts as layouts_lib

  against = _AGAINST.value  # checked by _bench_all
  alone = against and not _LAYOUTS.value and _SUITE.value != "layouts"
  layouts = _LAYOUTS.value or (["auto"] if alone else ["1", "auto"])
  flags_of = lambda steps, warmup, batches: dict(  # noqa: E731
    steps=steps, warmup=warmup, batches=batches, matmul_n=_MATMUL_N.value
  )
  if _SUITE.value == "layouts":
    runs = [
      (name, layouts_lib.suite_config_args(file, variant, overrides), flags_of(*timing))
      for name, file, variant, overrides, *timing in selected(_ONLY.value, layouts_lib.LAYOUT_SUITE)
    ]
  else:
    from jaxrepr import config as config_lib

    name = _NAME.value or config_lib.config_name(
      config_flags.get_config_filename(flags.FLAGS["config"])
    )
    args = layouts_lib.config_args(sys.argv[1:])
    runs = [(name, args, flags_of(_STEPS.value, _WARMUP.value, _BATCHES.value))]
  for name, args, bench_flags in runs:
    measured = layouts_lib.measure(name, args, layouts, _ROUNDS.value, bench_flags, against)
    for row, result in measured.items():
      _record(row, result)


def _bench_replicas(suite: tuple, suffix: str):
  """R seeds as one program against R separate runs, for each row of `suite` (rows
  `<name>_x1<suffix>`, `<name>_x<R><suffix>`): a step of the program trains R replicas, so its
  throughput gain is R x (one run's step time) / (the program's step time). Medians over --rounds
  interleaved rounds; CPU seconds per step beside wall time."""
  import numpy as np

  r = _REPLICAS.value
  variants = (("x1", 1), (f"x{r}", r))
  for name, file, variant, overrides in suite:
    rounds = {label: [] for label, _ in variants}
    for _ in range(_ROUNDS.value):
      for label, count in variants:
        config = suite_config(file, variant, overrides)
        if count > 1:
          config.seeds = tuple(range(count))
        rounds[label].append(
          bench(config, _STEPS.value, _WARMUP.value, _MATMUL_N.value, _BATCHES.value)
        )
    one = float(np.median([x["step_s"] for x in rounds["x1"]]))
    for label, count in variants:
      results = rounds[label]
      row = dict(results[-1])
      row.update(
        replicas=count,
        step_s=float(np.median([x["step_s"] for x in results])),
        step_s_rounds=[x["step_s"] for x in results],
        cpu_s_per_step=float(np.median([x["cpu_s_per_step"] for x in results])),
      )
      row["steps_per_s"] = 1.0 / row["step_s"]
      if count > 1:
        row["replica_throughput_gain"] = count * one / row["step_s"]
      _record(f"{name}_{label}{suffix}", row)


def _record(name: str, result: dict) -> None:
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, "results.json")
  results = json.load(open(path)) if os.path.exists(path) else {}
  results[name] = result
  results = dict(sorted(results.items()))  # the order results.json is written in
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  write_table(results, os.path.join(_OUT.value, "results.md"))
  written = [path, os.path.join(_OUT.value, "results.md")]
  if os.path.realpath(_OUT.value) == os.path.realpath(os.path.join(_CHECKOUT, "bench")):
    write_docs_table(results)  # only the checkout's own results belong in its docs
    from launch import _bench_layouts

    _bench_layouts.write_docs_block(results, DOCS_PAGE)
    written.append(DOCS_PAGE)
  batches = result.get("distinct_batches", 1)
  stat = "median" if batches == 1 else f"mean over {batches} batches"
  bound = "<= " if result.get("flops_upper_bound") else ""
  print(
    f"{name}: {result['steps_per_s']:.2f} steps/s ({stat} {1e3 * result['step_s']:.1f} ms), "
    f"compile {result['compile_s']:.1f}s, peak {fmt_bytes(result.get('peak_bytes', 0))} "
    f"(state {fmt_bytes(result['state_bytes_per_device'])}, donated "
    f"{fmt_bytes(result.get('donated_bytes', 0))}) "
    f"(RSS {fmt_bytes(result['peak_rss_bytes'])}), "
    f"{bound}{result['flops_per_step'] / 1e9:.3f} GFLOP/step, "
    f"utilisation {bound}{100 * result['utilisation']:.1f}% of the measured "
    f"{result['matmul_peak_flops'] / 1e9:.1f} GFLOP/s {result['precision']} matmul peak; "
    f"mean step {1e3 * result['step_s_mean']:.1f} ms, "
    f"{result['page_faults_per_step']:,.0f} page faults/step, malloc huge pages "
    f"{'on' if result['malloc_huge_pages'] else 'off'}"
  )
  print(f"wrote {', '.join(written)}", flush=True)


if __name__ == "__main__":
  app.run(main)
