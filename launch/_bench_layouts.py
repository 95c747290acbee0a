"""launch/bench.py in several CPU device layouts: each config timed with every `config.cpu_devices`
value of --layouts (e.g. `1,auto`), in interleaved rounds.

XLA fixes the CPU device count when JAX starts its backends, so every measurement runs in its own
`launch/bench.py` process (with `--config.cpu_devices=<layout>`) and this process, which never
starts JAX, collects their results: one row per device count, `<name>@<n>dev`, with the median
step time and CPU seconds per step over the rounds (a shared machine drifts; interleaving puts
each round of both layouts under the same load). The rows of every such config are compared in
the table between this module's markers in docs/benchmarks.md.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = "cpu-layouts"
_ROW = re.compile(r"^(?P<base>.+)@(?P<n>\d+)dev$")
PREVIOUS = "_previous"  # the rows of the checkout given by launch/bench.py --against

# (row name, config file, variant, overrides, timed steps, warm-up steps, distinct batches): what
# `--suite=layouts` runs, the configs of docs/benchmarks.md's table; few steps for the slow ones.
LAYOUT_SUITE = (
  ("classifier", "classifier.py", "", {}, 20, 3, 1),
  ("contrastive_strips_symile", "contrastive_strips.py", "", {}, 20, 3, 1),
  ("set_max", "set_max.py", "", {}, 20, 3, 1),
  ("set_clustering_b10_n300_599", "set_clustering.py", "", {}, 60, 3, 60),
  ("noprop_classifier_mnist5k", "noprop.py", "classifier,mnist5k", {}, 10, 3, 1),
  (
    "noprop_dt_one_block_mnist5k",
    "noprop.py",
    "dt,mnist5k",
    {"model.block_schedule": "sampled"},
    10,
    3,
    1,
  ),
  ("lpn_default_grad1_b64", "lpn.py", "", {}, 10, 3, 1),
  ("noprop_dt_all_blocks_mnist5k", "noprop.py", "dt,mnist5k", {}, 4, 2, 1),
  ("lpn_pattern_grad0_b128", "lpn.py", "pattern,grad0", {}, 4, 2, 1),
  ("lpn_pattern_grad1_b128", "lpn.py", "pattern,grad1", {}, 4, 2, 1),
  ("noprop_backprop_chain_mnist5k", "noprop.py", "backprop,mnist5k", {}, 3, 1, 1),
)


def suite_config_args(file: str, variant: str, overrides: dict) -> list[str]:
  """The --config flags of a suite entry, as a user would type them."""
  spec = os.path.join(CHECKOUT, "configs", file) + (f":{variant}" if variant else "")
  return [f"--config={spec}"] + [f"--config.{k}={v}" for k, v in overrides.items()]


def config_args(argv: list[str]) -> list[str]:
  """The --config and --config.<field> flags of a bench command line (the `=` form)."""
  if "--config" in argv:
    raise ValueError("with --layouts, write --config=<file> (with '=')")
  return [a for a in argv if a.startswith(("--config=", "--config."))]


def checkout_args(args: list[str], checkout: str) -> list[str]:
  """`args` for the launch/bench.py of `checkout`: a config file of this checkout becomes the same
  file of that one (a config's code and defaults are part of what is compared)."""
  out = []
  for arg in args:
    if arg.startswith("--config="):
      path, colon, variant = arg.split("=", 1)[1].partition(":")
      inside = os.path.relpath(os.path.realpath(path), os.path.realpath(CHECKOUT))
      if not inside.startswith(os.pardir):
        arg = f"--config={os.path.join(checkout, inside)}{colon}{variant}"
    out.append(arg)
  return out


def measure_once(
  args: list[str], layout: str, bench_flags: dict, checkout: str = CHECKOUT
) -> tuple[dict, str]:
  """One `launch/bench.py` process of `checkout` in `layout`: its result and the layout line it
  printed."""
  with tempfile.TemporaryDirectory() as out:
    cmd = [
      sys.executable,
      os.path.join(checkout, "launch", "bench.py"),
      *checkout_args(args, checkout),
      f"--config.cpu_devices={layout}",
      "--name=run",
      f"--out={out}",
      *(f"--{k}={v}" for k, v in bench_flags.items()),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
      raise RuntimeError(f"{' '.join(cmd)} failed:\n{(res.stdout + res.stderr)[-3000:]}")
    with open(os.path.join(out, "results.json")) as f:
      result = json.load(f)["run"]
  line = next((x for x in res.stderr.splitlines() if x.startswith("cpu devices:")), "")
  return result, line


def measure(
  name: str,
  args: list[str],
  layouts: list[str],
  rounds: int,
  bench_flags: dict,
  against: str | None = None,
):
  """{row name: result} of `name` in every layout, medians over `rounds` interleaved rounds;
  layouts that give the same device count (e.g. 'auto' resolving to 1) share a row. With
  `against` (another checkout of the project), each measurement is followed by the same one in
  that checkout, rows `<name>_previous@<n>dev`: both versions under the same load, in turn
  A B, B A, A B, ... so that a drift of the machine's speed does not favour one."""
  checkouts = [("", CHECKOUT)] + ([(PREVIOUS, against)] if against else [])
  by_row: dict[tuple[str, int], list[tuple[str, dict, str]]] = {}
  for r in range(rounds):
    for layout in layouts:
      for suffix, checkout in checkouts[:: -1 if r % 2 else 1]:
        result, line = measure_once(args, layout, bench_flags, checkout)
        by_row.setdefault((suffix, result["devices"]), []).append((layout, result, line))
        print(
          f"{name}{suffix} round {r + 1}/{rounds}, cpu_devices={layout}: {line or '?'}; "
          f"{1e3 * result['step_s']:.1f} ms/step, "
          f"{result.get('cpu_s_per_step', np.nan):.3f} CPU s/step",
          flush=True,
        )
  rows = {}
  for (suffix, count), runs in sorted(by_row.items()):
    results = [res for _, res, _ in runs]
    row = dict(results[-1])
    row.update(
      step_s=float(np.median([x["step_s"] for x in results])),
      step_s_rounds=[x["step_s"] for x in results],
      # (an older checkout's bench.py may not report CPU seconds)
      cpu_s_per_step=float(np.median([x.get("cpu_s_per_step", np.nan) for x in results])),
      cpu_s_per_step_rounds=[x.get("cpu_s_per_step", np.nan) for x in results],
      layouts=sorted({layout for layout, _, _ in runs}),
      layout_lines=sorted({line for _, _, line in runs if line}),
      rounds=rounds,
    )
    row["steps_per_s"] = 1.0 / row["step_s"]
    rows[f"{name}{suffix}@{count}dev"] = row
  return rows


def table_lines(results: dict) -> list[str]:
  """Every config measured in two or more layouts: its step time (median over rounds) and CPU
  seconds per step in each, and the speed-up of the most devices over one device."""
  groups: dict[str, dict[int, dict]] = {}
  for name, r in results.items():
    m = _ROW.match(name)
    if m:
      groups.setdefault(m["base"], {})[int(m["n"])] = r
  lines = [
    "| config | devices | step ms (median of rounds) | rounds (ms) | CPU s / step | "
    "speed-up vs 1 device | commit |",
    "|---|---|---|---|---|---|---|",
  ]
  for base, rows in sorted(groups.items()):
    if len(rows) < 2:
      continue
    one = rows.get(1)
    for n, r in sorted(rows.items()):
      gain = f"{one['step_s'] / r['step_s']:.2f}x" if one and n > 1 else ""
      rounds = ", ".join(f"{1e3 * s:.1f}" for s in r.get("step_s_rounds", [r["step_s"]]))
      lines.append(
        f"| {base} | {n} | {1e3 * r['step_s']:.1f}{'*' if r.get('distinct_batches', 1) > 1 else ''}"
        f" | {rounds} | {r['cpu_s_per_step']:.3f} | {gain} | {r.get('commit', '')} |"
      )
  return lines


def write_docs_block(results: dict, page: str) -> None:
  from launch import _doc_tables

  commits = dict.fromkeys(
    r["commit"] for n, r in sorted(results.items()) if _ROW.match(n) and r.get("commit")
  )
  measured = ", ".join(f"commit `{c}`" for c in commits) or "no recorded commit"
  head = [
    f"Written by this command, run from the checkout's root (rows measured at {measured}):",
    "",
    "    python launch/bench.py --suite=layouts --rounds=2",
    "",
  ]
  _doc_tables.write_block(page, BLOCK, "\n".join(head + table_lines(results)))
