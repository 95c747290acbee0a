"""Every benchmark figure in the README comes from bench/results.json, the artifact launch/bench.py
writes: the README's Benchmarks table and bench/results.md are the table bench.py generates from it,
and each steps/s or GiB / MiB figure quoted in the Benchmarks prose is a value of one of its rows."""

import importlib.util
import json
import os
import re

from tests.core.helpers import REPO


def _bench_module():
  spec = importlib.util.spec_from_file_location("bench", os.path.join(REPO, "launch", "bench.py"))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  return bench


def _results() -> dict:
  with open(os.path.join(REPO, "bench", "results.json")) as f:
    return json.load(f)


def _generated_table(tmp_path) -> list[str]:
  path = tmp_path / "results.md"
  _bench_module().write_table(_results(), str(path))
  return path.read_text().splitlines()


def _section(title: str) -> str:
  text = open(os.path.join(REPO, "README.md")).read()
  start = text.index(f"\n## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end >= 0 else None]


def test_the_readme_benchmarks_table_is_the_table_bench_writes(tmp_path):
  generated = _generated_table(tmp_path)
  in_readme = [l for l in _section("Benchmarks").splitlines() if l.startswith("|")]
  assert in_readme == generated
  assert open(os.path.join(REPO, "bench", "results.md")).read().splitlines() == generated


def _values(results: dict) -> dict[str, list[float]]:
  rates = [r["steps_per_s"] for r in results.values()]
  memory = [r[k] for r in results.values() for k in (
      "peak_bytes", "peak_rss_bytes", "param_bytes_per_device", "state_bytes_per_device")
      if k in r]
  return {"steps/s": rates, "GiB": [b / 2**30 for b in memory], "MiB": [b / 2**20 for b in memory]}


def test_every_rate_and_memory_figure_in_the_benchmarks_prose_is_in_the_results():
  values = _values(_results())
  prose = "\n".join(l for l in _section("Benchmarks").splitlines() if not l.startswith("|"))
  missing = []
  # "20.98 steps/s", "3.14 GiB", "2.7 GiB of buffers"; a range "3.6-3.7 GiB" quotes both ends.
  # A machine's memory ("24 GiB of RAM") is not a measurement.
  for m in re.finditer(r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))? ?(steps/s|GiB|MiB)\b(?! of RAM)",
                       prose):
    for figure in filter(None, m.group(1, 2)):
      digits = len(figure.split(".")[1]) if "." in figure else 0
      if not any(round(v, digits) == float(figure) for v in values[m.group(3)]):
        missing.append(f"{figure} {m.group(3)}")
  assert not missing, f"figures of the Benchmarks section with no row in bench/results.json: {missing}"
