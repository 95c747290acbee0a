"""Every benchmark figure in the documentation comes from bench/results.json, the artifact
launch/bench.py writes: the table between the markers of docs/benchmarks.md and bench/results.md are
the table bench.py generates from it (bench.py rewrites that part of the page itself), and each
steps/s or GiB / MiB figure quoted in the page's prose, or anywhere in README.md, is a value of one
of its rows; a seeds-as-one-program gain ('0.93x') quoted in any docs page beside its row's name is
that row's gain."""

import glob
import json
import math
import os
import re

from tests.core.helpers import REPO, bench_module

PAGE = os.path.join(REPO, "docs", "benchmarks.md")


_bench_module = bench_module


def _results() -> dict:
  with open(os.path.join(REPO, "bench", "results.json")) as f:
    return json.load(f)


def _generated_table(tmp_path) -> list[str]:
  path = tmp_path / "results.md"
  _bench_module().write_table(_results(), str(path))
  return path.read_text().splitlines()


def _page() -> tuple[list[str], str]:
  """docs/benchmarks.md: the lines between its table markers, and the rest of its text."""
  begin, end = _bench_module().DOCS_MARKERS
  text = open(PAGE).read()
  assert text.count(begin) == 1 and text.count(end) == 1, f"{PAGE}: the table markers are missing"
  head, rest = text.split(begin, 1)
  table, tail = rest.split(end, 1)
  return table.strip("\n").splitlines(), head + tail


def test_the_benchmarks_page_table_is_the_table_bench_writes(tmp_path):
  generated = _generated_table(tmp_path)
  table, _ = _page()
  assert table == generated
  assert open(os.path.join(REPO, "bench", "results.md")).read().splitlines() == generated


def test_bench_rewrites_only_the_table_of_the_page(tmp_path):
  """bench.py's writer puts the generated table between the markers and keeps the page's prose;
  a table edited by hand is replaced."""
  bench = _bench_module()
  original = open(PAGE).read()
  copy = tmp_path / "benchmarks.md"
  copy.write_text(original)
  bench.write_docs_table(_results(), str(copy))
  assert copy.read_text() == original
  first_row = bench.table_lines(_results())[2]
  copy.write_text(original.replace(first_row, first_row.replace("|", "| edited", 2), 1))
  bench.write_docs_table(_results(), str(copy))
  assert copy.read_text() == original


def _values(results: dict) -> dict[str, list[float]]:
  rates = [r["steps_per_s"] for r in results.values()]
  memory = [
    r[k]
    for r in results.values()
    for k in ("peak_bytes", "peak_rss_bytes", "param_bytes_per_device", "state_bytes_per_device")
    if k in r
  ]
  return {"steps/s": rates, "GiB": [b / 2**30 for b in memory], "MiB": [b / 2**20 for b in memory]}


def _figures_not_in_results(text: str, values: dict[str, list[float]]) -> list[str]:
  missing = []
  # "20.98 steps/s", "3.14 GiB", "2.7 GiB of buffers"; a range "3.6-3.7 GiB" quotes both ends.
  # A machine's memory ("24 GiB of RAM") is not a measurement.
  for m in re.finditer(
    r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))? ?(steps/s|GiB|MiB)\b(?! of RAM)", text
  ):
    for figure in filter(None, m.group(1, 2)):
      digits = len(figure.split(".")[1]) if "." in figure else 0
      if not any(round(v, digits) == float(figure) for v in values[m.group(3)]):
        missing.append(f"{figure} {m.group(3)}")
  return missing


def test_every_rate_and_memory_figure_in_the_benchmarks_prose_is_in_the_results():
  _, prose = _page()
  missing = _figures_not_in_results(prose, _values(_results()))
  assert not missing, f"figures of docs/benchmarks.md with no row in bench/results.json: {missing}"


def test_every_rate_and_memory_figure_in_the_readme_is_in_the_results():
  readme = open(os.path.join(REPO, "README.md")).read()
  missing = _figures_not_in_results(readme, _values(_results()))
  assert not missing, (
    f"README.md quotes figures with no row in bench/results.json (quote them "
    f"from the generated table of docs/benchmarks.md): {missing}"
  )


def test_the_figure_check_catches_a_figure_not_in_the_results():
  values = _values(_results())
  quoted = f"{values['steps/s'][0]:.2f} steps/s"
  assert not _figures_not_in_results(f"it runs {quoted}", values)
  assert _figures_not_in_results("it runs 123456.78 steps/s in 98765.4 GiB", values) == [
    "123456.78 steps/s",
    "98765.4 GiB",
  ]


def test_bench_times_a_program_of_several_seeds():
  """`launch/bench.py --suite=replicas` times the replicated step like any other."""
  from tests.core.helpers import load_config

  config = load_config("classifier", "mlp")
  config.seeds, config.num_devices = (0, 1), 1
  config.train.batch_size = 32
  result = _bench_module().bench(config, steps=2, warmup=1, matmul_n=64)
  assert result["step_s"] > 0 and result["cpu_s_per_step"] > 0 and math.isfinite(result["loss"])


def _authors_module():
  import importlib.util

  path = os.path.join(REPO, "launch", "authors_set_clustering.py")
  spec = importlib.util.spec_from_file_location("authors_set_clustering", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # imports torch only inside the timed child
  return module


def _table_of_block(name: str) -> list[str]:
  from launch import _doc_tables

  body = _doc_tables.blocks(open(PAGE).read(), PAGE)[name]
  return [line for line in body.splitlines() if line.startswith("|")]


def test_the_op_profile_table_is_the_one_profile_step_writes_from_its_json():
  from launch import _op_profile

  with open(os.path.join(REPO, "bench", "profiles.json")) as f:
    profiles = json.load(f)
  estimate = _op_profile.core_estimate_lines(profiles)
  assert len(estimate) > 2  # the one-core rows' estimate for all cores, under the first table
  assert _table_of_block("op-profile") == _op_profile.table_lines(profiles) + estimate


def test_the_authors_comparison_is_the_table_written_from_the_two_json_files():
  with open(os.path.join(REPO, "bench", "authors.json")) as f:
    authors = json.load(f)
  lines = _authors_module().comparison_lines(authors, _results())
  assert _table_of_block("authors-set-clustering") == lines


def test_the_authors_comparison_divides_the_authors_fastest_time_by_each_rows():
  authors = {
    "set_transformer_clustering@1threads": dict(threads=1, step_s=0.090, cpu_s_per_step=0.09),
    "set_transformer_clustering@2threads": dict(threads=2, step_s=0.060, cpu_s_per_step=0.11),
  }
  results = {
    "set_clustering_b10_n300_599@1dev": dict(devices=1, step_s=0.040, cpu_s_per_step=0.07),
    "set_clustering_b10_n300_599@2dev": dict(devices=2, step_s=0.030, cpu_s_per_step=0.06),
    "set_max@1dev": dict(devices=1, step_s=0.001, cpu_s_per_step=0.001),  # another config
  }
  lines = _authors_module().comparison_lines(authors, results)
  speedups = [line.split("|")[6].strip() for line in lines[2:]]
  assert speedups == ["0.67x", "1.00x", "1.50x", "2.00x"]
  assert "jaxrepr" in lines[-1] and "2 device(s)" in lines[-1]


def test_the_profile_prose_quotes_the_figures_of_the_current_profiles():
  """The paragraphs that read the profiles (what bounds the LPN and set-clustering steps) quote
  figures computed here from bench/profiles.json, bench/authors.json and bench/results.json: a
  re-measured profile whose figures differ fails until the prose says what the new rows show."""
  from launch import _op_profile

  with open(os.path.join(REPO, "bench", "profiles.json")) as f:
    prof = json.load(f)
  with open(os.path.join(REPO, "bench", "authors.json")) as f:
    authors = json.load(f)
  results = _results()
  text = " ".join(open(PAGE).read().split())  # the prose with its line breaks as spaces

  def row(config, kind):
    return prof[f"{config}@{kind}"]

  def pct(x):
    return f"{100 * x:.0f}%"

  def alone_util(p):
    return (
      p["categories"]["matmul"]["flops"] / (p["isolated_dot_ms"] / 1e3) / p["matmul_peak_flops"]
    )

  def step_util(p):
    return p["categories"]["matmul"]["flops"] / (p["step_ms"] / 1e3) / p["matmul_peak_flops"]

  def other_share(p):
    c = p["categories"]
    return (c["data movement"]["ms"] + c["elementwise/reduce"]["ms"]) / p["op_ms"]

  g0, g1 = (row(f"lpn_pattern_grad{k}_b128", "one_core") for k in (0, 1))
  w0, w1 = (row(f"lpn_pattern_grad{k}_b128", "1dev") for k in (0, 1))
  estimates = {
    line.split("|")[1].strip(): line.split("|")[8].strip()  # util. at the estimate
    for line in _op_profile.core_estimate_lines(prof)[2:]
  }
  expected = [
    f"alone run at {pct(alone_util(g0))} (Grad 0) and {pct(alone_util(g1))} (Grad 1)",
    f"the steps reach {pct(step_util(g0))} and {pct(step_util(g1))}",
    f"matmuls take {pct(g0['categories']['matmul']['ms'] / g0['isolated_dot_ms'] - 1)} and "
    f"{pct(g1['categories']['matmul']['ms'] / g1['isolated_dot_ms'] - 1)} longer than alone",
    f"take {pct(other_share(g0))} and {pct(other_share(g1))} of the op time",
    f"only {g0['isolated_dot_ms'] / w0['isolated_dot_ms']:.1f}x and "
    f"{g1['isolated_dot_ms'] / w1['isolated_dot_ms']:.1f}x faster than on one core",
    f"gives Grad 1 {estimates['lpn_pattern_grad1_b128']} of the peak",
    f"gives Grad 0 {estimates['lpn_pattern_grad0_b128']}, just short of 50%",
  ]
  best = {k: results[k] for k in ("lpn_pattern_grad0_b128_auto", "lpn_pattern_grad1_b128@2dev")}
  expected += [
    f"Grad 0 {100 * best['lpn_pattern_grad0_b128_auto']['utilisation']:.1f}% with the default",
    f"commit `{best['lpn_pattern_grad0_b128_auto']['commit']}`), Grad 1 "
    f"{100 * best['lpn_pattern_grad1_b128@2dev']['utilisation']:.1f}%",
    f"layout table, `{best['lpn_pattern_grad1_b128@2dev']['commit']}`",
  ]
  plain, accum = (results[f"lpn_pattern_grad0_b128_auto{x}"] for x in ("", "_accum4"))
  authors_bytes = 8e9  # the authors' Grad 0 peak resident memory, 8 GB (quoted above)
  expected += [
    f"(`lpn_pattern_grad0_b128_auto`, {plain['peak_rss_bytes'] / authors_bytes:.2f}x)",
    f"({accum['peak_rss_bytes'] / 1e9:.2f} GB, {accum['peak_rss_bytes'] / authors_bytes:.2f}x)",
    f"{1e3 * accum['step_s']:.1f} against {1e3 * plain['step_s']:.1f} ms per step",
  ]
  sc, sc_whole = (row("set_clustering_b10_n300_599", k) for k in ("one_core", "1dev"))
  theirs_by = {v["threads"]: v for k, v in authors.items() if "@" in k}
  fastest_threads = min(theirs_by, key=lambda t: theirs_by[t]["step_s"])
  theirs = theirs_by[fastest_threads]["step_s"]
  ours_rows = {n: results[f"set_clustering_b10_n300_599@{n}dev"] for n in (1, 2)}
  ours = {n: r["step_s"] for n, r in ours_rows.items()}
  fastest_devices = min(ours, key=ours.get)
  other = sc["op_ms"] - sc["categories"]["matmul"]["ms"]
  estimate = (sc["isolated_dot_ms"] + other) / sc["cpu_count"]
  expected += [
    f"fastest layout ({fastest_devices} devices) took {theirs / ours[fastest_devices]:.2f}x less",
    f"fastest thread count ({fastest_threads} threads)",
    f"with {ours_rows[fastest_devices]['cpu_s_per_step']:.3f} against "
    f"{theirs_by[fastest_threads]['cpu_s_per_step']:.3f} CPU seconds per step",
    f"two-core peak, {sc_whole['matmul_peak_flops'] / sc['matmul_peak_flops']:.2f}x it",
    f"dots alone run at {pct(alone_util(sc))} of the one-core peak",
    f"is {estimate:.1f} ms, {theirs / (estimate / 1e3):.2f}x the authors' {1e3 * theirs:.1f} ms",
    f"The step's {1e3 * ours[2]:.1f} ms is above it",
    f"({ours[1] / ours[2]:.2f}x over one device",
    f"({sc['categories']['matmul']['ms']:.1f} against {sc['isolated_dot_ms']:.1f} ms on one core",
  ]
  missing = [e for e in expected if e not in text]
  assert not missing, f"docs/benchmarks.md no longer quotes its profiles: {missing}"


def _gain_figures_not_in_results(text: str, results: dict) -> list[str]:
  """Each 'N.NNx' of a paragraph that names a seeds-as-one-program row (`<name>_x3`, with a
  replica_throughput_gain) must be the gain of a row that paragraph names."""
  missing = []
  for paragraph in re.split(r"\n\s*\n", text):
    named = [results[n] for n in re.findall(r"`(\w+)`", paragraph) if n in results]
    gains = [r["replica_throughput_gain"] for r in named if "replica_throughput_gain" in r]
    if not gains:
      continue
    for figure in re.findall(r"\b(\d+\.\d+)x\b", paragraph):
      digits = len(figure.split(".")[1])
      if not any(round(g, digits) == float(figure) for g in gains):
        missing.append(f"{figure}x")
  return missing


def test_every_seeds_as_one_program_gain_quoted_in_the_docs_is_its_rows_gain():
  results = _results()
  problems = []
  for path in sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))):
    text = open(path).read()
    problems += [
      f"{os.path.basename(path)}: {f}" for f in _gain_figures_not_in_results(text, results)
    ]
  assert not problems, f"gains quoted with no such row gain in bench/results.json: {problems}"
  row = next(n for n, r in results.items() if "replica_throughput_gain" in r)
  quoted = f"{results[row]['replica_throughput_gain']:.2f}x"
  assert not _gain_figures_not_in_results(f"`{row}` gains {quoted}", results)
  assert _gain_figures_not_in_results(f"`{row}` gains 12.34x", results) == ["12.34x"]
