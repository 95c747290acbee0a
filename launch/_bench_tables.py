"""The markdown tables of launch/bench.py's results: bench/results.md and the generated table of
docs/benchmarks.md (between DOCS_MARKERS), one row per result name."""

import os


def fmt_bytes(b) -> str:
  if b >= 2**30:
    return f"{b / 2**30:.2f} GiB"
  return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_PAGE = os.path.join(_CHECKOUT, "docs", "benchmarks.md")
DOCS_MARKERS = (
  "<!-- benchmarks-table: written by launch/bench.py from bench/results.json; "
  "do not edit by hand -->",
  "<!-- /benchmarks-table -->",
)


def table_lines(results: dict) -> list[str]:
  """The markdown table of every result, one row per name."""
  rows = [
    "| name | device | batch | params | param bytes / device | steps/s | step ms (median; mean*) | "
    "CPU s / step | replicas (gain) | "
    "compile s | peak mem (XLA) | peak RSS | GFLOP/step | util. vs matmul peak | commit |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, r in results.items():
    fsdp = f" (fsdp {r['fsdp']})" if r.get("fsdp", 1) > 1 else ""
    bound = "<= " if r.get("flops_upper_bound") else ""
    per_device = (
      fmt_bytes(r["param_bytes_per_device"]) + fsdp if "param_bytes_per_device" in r else ""
    )
    cpu = f"{r['cpu_s_per_step']:.3f}" if "cpu_s_per_step" in r else ""
    rows.append(
      f"| {name} | {r['devices']}x {r['device_kind']} | {r['batch_size']} | {r['params']:,} | "
      f"{per_device} | "
      f"{r['steps_per_s']:.2f} | {1e3 * r['step_s']:.1f}"
      f"{'*' if r.get('distinct_batches', 1) > 1 else ''} | "
      f"{cpu} | {_replicas_cell(r)} | {r['compile_s']:.1f} | "
      f"{fmt_bytes(r.get('peak_bytes', 0))} | {fmt_bytes(r['peak_rss_bytes'])} | "
      f"{bound}{r['flops_per_step'] / 1e9:.2f} | {bound}{100 * r['utilisation']:.1f}% | "
      f"{r.get('commit', '')} |"
    )
  return rows


def _replicas_cell(r: dict) -> str:
  if r.get("replicas", 1) == 1:
    return "1" if "replicas" in r else ""
  return f"{r['replicas']} ({r['replica_throughput_gain']:.2f}x)"


def write_table(results: dict, path: str) -> None:
  with open(path, "w") as f:
    f.write("\n".join(table_lines(results)) + "\n")


def write_docs_table(results: dict, path: str = DOCS_PAGE) -> None:
  """Replaces the table between the DOCS_MARKERS of `path` (docs/benchmarks.md) with the table of
  `results`; the page's other text is kept as it is."""
  from launch import _doc_tables

  _doc_tables.replace_between(path, *DOCS_MARKERS, "\n".join(table_lines(results)))
