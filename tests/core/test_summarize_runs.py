"""Result tables are generated from run directories, not typed (launch/summarize_runs.py).

Run directories are fabricated (metrics.jsonl, config.json) in the layouts the trainer writes: a
multi-seed workdir `W/s<seed>/`, a sweep `W/<point>/s<seed>/` (nested when a field changes the
program), and sibling runs `x_s<seed>`. The docs test reads every generated block of docs/*.md and
README.md (`<!-- NAME:start -->` ... `<!-- NAME:end -->`): each table in one states the command that
regenerates it, writing into that page and block, and a commit (tables typed outside such blocks:
tests/core/test_typed_tables.py).
"""

import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

import pytest

from jaxrepr.errors import ConfigError
from launch import _doc_tables, _run_tables
from tests.core.helpers import REPO

SCRIPT = os.path.join(REPO, "launch", "summarize_runs.py")


def _run(path, finals, steps=10, **config):
  """A run directory whose metric climbs to `finals` (one value or {metric: value}) at `steps`."""
  path.mkdir(parents=True)
  finals = finals if isinstance(finals, dict) else {"test/accuracy": finals}
  train = {"steps": steps, "batch_size": 32, **config.pop("train", {})}
  (path / "config.json").write_text(json.dumps({"train": train, **config}))
  rows = [{"step": steps // 2, **{m: 0.0 for m in finals}}, {"step": steps, **finals}]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _rows(text):
  """{run cell: [cells]} of a markdown table."""
  rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
  return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


def _summary(patterns, **kwargs):
  groups = _run_tables.group_runs(_run_tables.expand(patterns), r"_s(\d+)$")
  args = {"metrics": ["test/accuracy"], "scale": 1.0, "digits": 3, "skip": False, **kwargs}
  return _run_tables.table(groups, **args)


def test_a_multi_seed_workdir_is_one_group_named_after_it_with_its_seeds_in_order(tmp_path):
  w = tmp_path / "three_seeds"
  finals = {2: 0.5, 10: 0.7, 0: 0.6}
  for seed, final in finals.items():
    _run(w / f"s{seed}", final, seed=seed)
  (w / "config.json").write_text("{}")  # the program's own config and checkpoints sit beside
  (w / "checkpoints").mkdir()
  assert _run_tables.expand([str(w)]) == [str(w / f"s{s}") for s in (0, 2, 10)]
  values = [finals[s] for s in (0, 2, 10)]
  for pattern in (str(w), f"{w}/s*"):
    text, skipped, _ = _summary([pattern])
    row = _rows(text)["three_seeds"]
    assert row[1] == f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"
    assert row[2] == "3" and row[3] == "s0: 0.600, s2: 0.500, s10: 0.700"
    assert not skipped


def test_a_sweep_gives_one_group_per_point(tmp_path):
  points = {
    "optim.lr=0.001,optim.weight_decay=0.0001": 0.8,
    "optim.lr=0.0003,optim.weight_decay=0": 0.4,
  }
  for point, final in points.items():
    for seed in (0, 1):
      _run(tmp_path / "sweep" / point / f"s{seed}", final + seed / 10)
  # A field that changes the program nests the in-program points one level down.
  _run(tmp_path / "wide" / "model.width=8" / "optim.lr=0.1" / "s0", 0.3)
  _run(tmp_path / "wide" / "model.width=16" / "optim.lr=0.1" / "s0", 0.2)
  rows = _rows(_summary([str(tmp_path / "sweep"), str(tmp_path / "wide")])[0])
  assert set(rows) == set(points) | {"model.width=8/optim.lr=0.1", "model.width=16/optim.lr=0.1"}
  for point, final in points.items():
    assert rows[point][1] == f"{final + 0.05:.3f} +- {statistics.stdev([0, 0.1]):.3f}"
    assert rows[point][2] == "2"
  assert rows["model.width=16/optim.lr=0.1"][1] == "0.200"
  groups = _run_tables.group_runs(_run_tables.expand([str(tmp_path / "sweep")]), r"_s(\d+)$")
  labels = ["optim.lr=0.001,optim.weight_decay=0.0001=lr 1e-3, wd=1e-4"]
  assert _run_tables.parse_labels(labels, groups) == {
    "optim.lr=0.001,optim.weight_decay=0.0001": "lr 1e-3, wd=1e-4"
  }
  with pytest.raises(ConfigError, match="names no group"):
    _run_tables.parse_labels(["optim.lr=0.001=x"], groups)
  # The same point in two sweeps: two groups, named with their workdir.
  _run(tmp_path / "again" / "optim.lr=0.001,optim.weight_decay=0.0001" / "s0", 0.1)
  rows = _rows(_summary([f"{tmp_path}/sweep", f"{tmp_path}/again"])[0])
  assert rows[f"{tmp_path}/again/optim.lr=0.001,optim.weight_decay=0.0001"][1] == "0.100"


def test_sibling_runs_with_a_seed_suffix_still_group_beside_multi_seed_workdirs(tmp_path):
  table = tmp_path / "table"
  _run(table / "dt_s0", 0.9)
  _run(table / "dt_s1", 0.7)
  _run(table / "backprop", 0.5)
  _run(table / "fm" / "s0", 0.4)
  _run(table / "fm" / "s1", 0.2)
  rows = _rows(_summary([f"{table}/*"])[0])
  assert rows["dt"][1:3] == ["0.800 +- 0.141", "2"]
  assert rows["backprop"][1:3] == ["0.500", "1"]
  assert rows["fm"][1:4] == ["0.300 +- 0.141", "2", "s0: 0.400, s1: 0.200"]
  labelled = _rows(_summary([f"{table}/*"], labels={"fm": "NoProp-FM (`:fm`)"})[0])
  assert set(labelled) == {"dt", "backprop", "NoProp-FM (`:fm`)"}
  with pytest.raises(ConfigError, match=r"--label names no group: \['fn'\]"):
    _summary([f"{table}/*"], labels={"fn": "typo"})


def test_the_table_states_the_budget_and_the_commit_the_runs_recorded(tmp_path):
  flops = {"budget": {"kind": "flops", "value": 2e12}, "total_flops": 1.99e12, "steps": 412}
  for seed in (0, 1):
    _run(tmp_path / "matched" / f"s{seed}", 0.5, steps=412, train=flops, commit="abc1234")
  _run(tmp_path / "plain_s0", 0.5, steps=160)
  text, _, commits = _summary([str(tmp_path / "matched"), str(tmp_path / "plain_s0")])
  rows = _rows(text)
  assert rows["matched"][4:] == ["412 steps x 32, budget: 2e+12 flops, 1.99e+12 FLOPs", "`abc1234`"]
  assert rows["plain"][4:] == ["160 steps x 32", "-"]
  assert commits == ["abc1234"]
  steps_of = {"kind": "steps_of", "value": 2400.0, "reference": "configs/noprop.py:backprop"}
  _run(tmp_path / "of_s0", 0.5, steps=23412, train={"budget": steps_of, "total_flops": 3.5e14})
  rows = _rows(_summary([str(tmp_path / "of_s0")])[0])
  assert rows["of"][4] == (
    "23412 steps x 32, budget: 2400 steps of `configs/noprop.py:backprop`, 3.5e+14 FLOPs"
  )
  block = _doc_tables.results_block(
    text, "python launch/summarize_runs.py --runs=x", "fedcba9", commits, []
  )
  assert "commit `fedcba9`" in block and "the runs recorded commit `abc1234`" in block
  assert "    python launch/summarize_runs.py --runs=x" in block.splitlines()
  assert "recorded no commit" in _doc_tables.results_block(text, "c", "fedcba9", [], [])


def test_the_table_by_metric_has_a_row_per_metric_and_each_seed_under_its_group(tmp_path):
  finals = {0: {"a/exact": 0.5, "b/exact": 0.9}, 1: {"a/exact": 0.7, "b/exact": 0.8}}
  for seed, values in finals.items():
    _run(tmp_path / "main" / f"s{seed}", values, steps=20, commit="abc1234")
  groups = _run_tables.group_runs(_run_tables.expand([str(tmp_path / "main")]), r"_s(\d+)$")
  text, skipped, commits = _run_tables.table_by_metric(
    groups, ["a/exact", "b/exact"], 100.0, 1, False, {"main": "held-out"}
  )
  lines = text.splitlines()
  assert lines[:2] == _run_tables.header_by_metric(["held-out"])
  rows = _rows(text)
  assert rows["a/exact"][1] == "60.0 +- 14.1 (50.0, 70.0)"
  assert rows["b/exact"][1] == "85.0 +- 7.1 (90.0, 80.0)"
  assert "held-out: seeds 0, 1; budget 20 steps x 32; commit `abc1234`." in lines
  assert (skipped, commits) == ([], ["abc1234"])


def test_an_incomplete_seed_stops_the_table_or_is_left_out_and_named(tmp_path):
  w = tmp_path / "w"
  _run(w / "s0", 0.6)
  _run(w / "s1", 0.8)
  _run(w / "s2", 0.9, steps=10)
  (w / "s2" / "config.json").write_text(json.dumps({"train": {"steps": 20}}))  # still training
  (w / "s3").mkdir()  # started, nothing logged yet
  with pytest.raises(
    _run_tables.IncompleteRun, match="s2: test/accuracy last logged at step 10 of 20"
  ):
    _summary([str(w)])
  text, skipped, _ = _summary([str(w)], skip=True)
  assert _rows(text)["w"][1:4] == ["0.700 +- 0.141", "2", "s0: 0.600, s1: 0.800"]
  assert [s for s, _ in skipped] == [str(w / "s2"), str(w / "s3")]
  assert "metrics.jsonl does not exist" in skipped[1][1]
  block = _doc_tables.results_block(text, "c", "fedcba9", [], skipped)
  assert f"Left out, incomplete: `{w / 's2'}`" in block


def _summarize(*args, cwd=REPO):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=cwd)


PAGE = """# Results

Prose before the table.

<!-- seeds:start -->
| typed | by hand |
|---|---|
| 1 | 2 |
<!-- seeds:end -->

Prose after the table.
"""


def test_the_command_writes_the_table_and_its_command_between_the_markers_only(tmp_path):
  for seed in (0, 1):
    _run(tmp_path / "runs" / "w" / f"s{seed}", 0.5 + seed / 10)
  page, out = tmp_path / "page.md", tmp_path / "table.md"
  page.write_text(PAGE)
  args = [f"--runs={tmp_path}/runs/*", "--scale=100", f"--into={page}", "--marker=seeds"]
  res = _summarize(*args, f"--out={out}")
  assert res.returncode == 0, res.stderr
  text = page.read_text()
  head, rest = text.split("<!-- seeds:start -->\n")
  body, tail = rest.split("<!-- seeds:end -->")
  assert (
    head + tail == PAGE.split("<!-- seeds:start -->\n")[0] + PAGE.split("<!-- seeds:end -->")[1]
  )
  assert "typed | by hand" not in body
  assert _rows(body)["w"][1:3] == ["55.00 +- 7.07", "2"]
  assert f"commit `{_doc_tables.commit()}`" in body
  assert out.read_text() == body
  assert _doc_tables.blocks(text, "page") == {"seeds": body.strip("\n")}
  # The stated command, run again from the checkout's root, writes the same page.
  (line,) = [x for x in body.splitlines() if x.startswith("    python launch/summarize_runs.py")]
  stated = shlex.split(line)
  assert (
    f"--into={page}" in stated and "--marker=seeds" in stated and "--metric=test/accuracy" in stated
  )
  page.write_text(PAGE)
  out.unlink()
  again = subprocess.run([sys.executable, *stated[1:]], capture_output=True, text=True, cwd=REPO)
  assert again.returncode == 0, again.stderr
  assert page.read_text() == text and out.read_text() == body
  # A page without the block's markers is left alone, and the error says which lines to add.
  page.write_text("no markers\n")
  missing = _summarize(*args)
  assert (
    missing.returncode != 0 and "'<!-- seeds:start -->' and '<!-- seeds:end -->'" in missing.stderr
  )
  assert page.read_text() == "no markers\n"


def test_paths_in_a_stated_command_are_relative_to_the_checkout(tmp_path):
  root = _doc_tables.CHECKOUT
  assert _doc_tables.checkout_relative(os.path.join(root, "docs", "p.md")) == "docs/p.md"
  assert _doc_tables.checkout_relative(os.path.join(root, "runs", "t", "*")) == "runs/t/*"
  assert _doc_tables.checkout_relative(str(tmp_path / "runs")) == str(tmp_path / "runs")
  outside = os.path.relpath(tmp_path / "runs")  # from the current directory
  assert _doc_tables.checkout_relative(outside) == str(tmp_path / "runs")


def test_blocks_are_parsed_by_name_and_a_broken_pair_is_an_error():
  text = "a\n<!-- x:start -->\nX\n<!-- x:end -->\nb\n<!-- y.2:start -->\n\nY\n<!-- y.2:end -->\n"
  assert _doc_tables.blocks(text) == {"x": "X", "y.2": "Y"}
  for broken, problem in (
    ("<!-- x:start -->\n", "no end marker"),
    ("<!-- x:end -->\n", "without its start"),
    ("<!-- x:start -->\n<!-- y:start -->\n<!-- y:end -->\n<!-- x:end -->", "inside block 'x'"),
    ("<!-- x:start -->\n<!-- x:end -->\n<!-- x:start -->\n<!-- x:end -->", "two blocks"),
  ):
    with pytest.raises(ValueError, match=problem):
      _doc_tables.blocks(broken, "page.md")


def _block_problems(page: str, name: str, body: str) -> list[str]:
  """What a generated block of `page` lacks: a table's regenerating command (writing into this page
  and block, with the table's own header) and a commit."""
  if not any(line.startswith("|") for line in body.splitlines()):
    return []
  problems = []
  commands = [
    shlex.split(line)
    for line in body.splitlines()
    if re.match(
      r"\s*(taskset -c [\d,]+ )?python3? launch/"
      r"(summarize_runs|summarize_distill|enroll_report|bench|profile_step|"
      r"authors_set_clustering)\.py\b",
      line,
    )
  ]
  if not commands:
    problems.append(f"{page} block {name!r}: no command that regenerates its table")
  if not re.search(r"\bcommit `[0-9a-f]{7,40}\+?`", body):
    problems.append(f"{page} block {name!r}: no commit")
  for cmd in commands:
    if cmd[1] not in (
      "launch/summarize_runs.py",
      "launch/summarize_distill.py",
      "launch/enroll_report.py",
    ):
      continue
    if f"--into={page}" not in cmd or f"--marker={name}" not in cmd:
      problems.append(f"{page} block {name!r}: its command writes elsewhere: {shlex.join(cmd)}")
    if cmd[1] != "launch/summarize_runs.py":
      continue  # their tables: test_summarize_distill, test_enroll_eval; rerun by test_kept_tables
    metrics = [a.split("=", 1)[1] for a in cmd if a.startswith("--metric=")]
    at_steps = [a.split("=", 1)[1] for a in cmd if a.startswith("--at_steps=")]
    if at_steps:
      steps = [int(x) for x in at_steps[0].split(",")]
      if _run_tables.curve_header(steps)[0] not in body.splitlines():
        problems.append(f"{page} block {name!r}: its table is not the curve at {steps}")
    elif "--by=metric" in cmd:
      first_cells = [line.split(" | ")[0].lstrip("| ") for line in body.splitlines()]
      if not all(m in first_cells for m in metrics):
        problems.append(f"{page} block {name!r}: its rows are not the metrics {metrics}")
    elif _run_tables.header(metrics, "--train_time" in cmd)[0] not in body.splitlines():
      problems.append(f"{page} block {name!r}: its table is not the table of {metrics}")
  return problems


def _pages():
  return sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))) + [os.path.join(REPO, "README.md")]


def test_every_generated_table_in_the_docs_states_its_command_and_commit():
  problems = []
  for path in _pages():
    page = os.path.relpath(path, REPO)
    for name, body in _doc_tables.blocks(open(path).read(), page).items():
      problems += _block_problems(page, name, body)
  assert not problems, "\n".join(problems)


def test_the_docs_check_rejects_a_table_typed_or_copied_into_a_block():
  cmd = "python launch/summarize_runs.py --runs=runs/w --metric=test/accuracy"
  table = "\n".join(_run_tables.header(["test/accuracy"]) + ["| w | 0.50 | 1 | s0: 0.50 | - | - |"])
  own = _doc_tables.results_block(table, f"{cmd} --into=docs/p.md --marker=t", "abc1234", [], [])
  assert _block_problems("docs/p.md", "t", own) == []
  assert len(_block_problems("docs/p.md", "t", table)) == 2  # typed: no command, no commit
  assert "writes elsewhere" in _block_problems("docs/q.md", "t", own)[0]
  assert "writes elsewhere" in _block_problems("docs/p.md", "u", own)[0]
  no_commit = own.replace("commit `abc1234`", "commit `?`")
  assert _block_problems("docs/p.md", "t", no_commit) == ["docs/p.md block 't': no commit"]
  other = own.replace("--metric=test/accuracy", "--metric=test/loss")
  assert "not the table of ['test/loss']" in _block_problems("docs/p.md", "t", other)[0]
  by_metric = "\n".join(_run_tables.header_by_metric(["w"]) + ["| test/accuracy | 0.50 |"])
  own = _doc_tables.results_block(
    by_metric, f"{cmd} --by=metric --into=docs/p.md --marker=t", "abc1234", [], []
  )
  assert _block_problems("docs/p.md", "t", own) == []
  other = own.replace("--metric=test/accuracy", "--metric=test/loss")
  assert "rows are not the metrics ['test/loss']" in _block_problems("docs/p.md", "t", other)[0]


def test_plot_runs_draws_a_curve_per_seed_of_a_multi_seed_or_sweep_workdir(tmp_path):
  for seed in (0, 1):
    _run(tmp_path / "w" / f"s{seed}", 0.5)
    _run(tmp_path / "sweep" / "optim.lr=0.1" / f"s{seed}", 0.5)
  _run(tmp_path / "single", 0.5)
  runs = [str(tmp_path / n) for n in ("w", "sweep", "single")]
  assert _run_tables.labelled(runs, ["a", "b", "c"]) == [
    ("a/s0", str(tmp_path / "w" / "s0")),
    ("a/s1", str(tmp_path / "w" / "s1")),
    ("b/optim.lr=0.1/s0", str(tmp_path / "sweep" / "optim.lr=0.1" / "s0")),
    ("b/optim.lr=0.1/s1", str(tmp_path / "sweep" / "optim.lr=0.1" / "s1")),
    ("c", str(tmp_path / "single")),
  ]
  assert [label for label, _ in _run_tables.labelled(runs[2:])] == ["single"]
