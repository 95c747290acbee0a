"""Timing of single matmuls on the default device: the machine's usable peak (a large square
matmul) for launch/bench.py's utilisation column, and any dot alone for launch/profile_step.py."""

import time


def matmul_peak_flops(n: int, dtype: str = "float32", reps: int = 10) -> float:
  """Median FLOP/s of an n x n @ n x n matmul on the default device: the machine's usable peak."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  return 2 * n**3 / median_seconds(jax.jit(jnp.matmul), a, b, min_reps=reps, budget_s=0.0)


def median_seconds(f, *args, min_reps: int = 5, budget_s: float = 0.3) -> float:
  """Median wall seconds of the compiled call f(*args), after one warm call; at least `min_reps`
  calls and about `budget_s` seconds of them."""
  import jax
  import numpy as np

  jax.block_until_ready(f(*args))
  times = []
  start = time.perf_counter()
  while len(times) < min_reps or time.perf_counter() - start < budget_s:
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
    if len(times) >= 1000:
      break
  return float(np.median(times))


def call_overhead_seconds() -> float:
  """Median seconds of a jitted call that does almost nothing (two small operands in, one scalar
  out): the dispatch cost inside every timed `dot_seconds`, which a dot run inside a step does not
  pay."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((8, 8))
  return median_seconds(jax.jit(lambda x, y: x[0, 0] + y[0, 0]), a, a)


def dot_seconds(dot) -> float:
  """Median seconds of one `launch._op_profile.Dot` alone: lax.dot_general on random operands of
  its shapes and dimension numbers, jitted, in the default layouts."""
  import jax

  dtype = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}[dot.dtype]
  a = jax.random.normal(jax.random.key(0), dot.lhs, dtype)
  b = jax.random.normal(jax.random.key(1), dot.rhs, dtype)
  numbers = ((dot.lhs_contracting, dot.rhs_contracting), (dot.lhs_batch, dot.rhs_batch))
  f = jax.jit(lambda x, y: jax.lax.dot_general(x, y, numbers))
  return median_seconds(f, a, b)
