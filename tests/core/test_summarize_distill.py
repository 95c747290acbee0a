"""Distillation tables are generated from the stage directories of the runs
(launch/summarize_distill.py, launch/_distill_tables.py).

Workdirs are fabricated in the layout configs/distill.py's runs write: `W/stage_k/config.json` with
the run's `stages` section and `W/stage_k/metrics.jsonl` with the 'distill' evaluator's final test
metrics. The end-to-end check on real stage runs is tests/core/test_kept_tables.py, which reruns
the command stated beside each docs table of kept runs.
"""

import json
import shlex
import subprocess
import sys

import pytest

from jaxrepr.errors import ConfigError, DataError, MissingFileError
from launch import _distill_tables, _doc_tables, _run_tables
from tests.core.helpers import REPO

SCRIPT = f"{REPO}/launch/summarize_distill.py"


def _stage(path, accuracy, kl, *, steps=40, **stages):
  path.mkdir(parents=True)
  config = dict(
    commit="abc1234",
    data=dict(dataset=stages.pop("dataset", "digits")),
    model=dict(student=dict(hidden=list(stages.pop("hidden", (128,))))),
    train=dict(steps=steps, batch_size=8),
    stages={
      "kind": "compress",
      "num_stages": 1,
      "compress": "sparsity",
      "sparsity_schedule": "linear",
      "final_sparsity": 0.97,
      "final_width_factor": 1 / 32,
      "generations": 4,
      "alpha": 0.5,
      **stages,
    },
  )
  (path / "config.json").write_text(json.dumps(config))
  final = {"test/accuracy": accuracy, "test/kl_reference": kl, "test/reference_accuracy": 0.98}
  rows = [{"step": steps // 2, "train/loss": 1.0}, {"step": steps, **final}]
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _compress_run(workdir, n, schedule, finals, **fields):
  """n stages stage_1..stage_n; `finals` is [(accuracy, kl)] of each."""
  for k, (acc, kl) in enumerate(finals, start=1):
    _stage(workdir / f"stage_{k}", acc, kl, num_stages=n, sparsity_schedule=schedule, **fields)


def _recursive_run(workdir, alpha, kls, hidden=(128,), **fields):
  for k, kl in enumerate(kls):
    _stage(
      workdir / f"stage_{k}",
      0.5 + k / 10,
      kl,
      kind="recursive",
      generations=len(kls) - 1,
      alpha=alpha,
      hidden=hidden,
      **fields,
    )


def _cells(text):
  return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]


def test_a_compression_row_is_the_final_student_of_each_run_in_data_schedule_n_order(tmp_path):
  _compress_run(
    tmp_path / "n4_geo", 4, "geometric", [(0.9, 0.1), (0.8, 0.2), (0.7, 0.3), (0.6, 0.5)]
  )
  _compress_run(tmp_path / "n1", 1, "linear", [(0.55, 1.436)])
  _compress_run(tmp_path / "n2_lin", 2, "linear", [(0.9, 0.1), (0.571, 1.432)])
  _compress_run(tmp_path / "mnist_n1", 1, "linear", [(0.5, 1.257)], dataset="mnist5k")
  _compress_run(tmp_path / "s80_n1", 1, "linear", [(0.8, 0.2)], final_sparsity=0.8)
  _compress_run(tmp_path / "s9_n1", 1, "linear", [(0.9, 0.1)], final_sparsity=0.095)
  _compress_run(tmp_path / "w2", 2, "linear", [(0.9, 0.1), (0.7, 0.4)], compress="width")
  named = ("n4_geo", "n1", "w2", "n2_lin", "mnist_n1", "s80_n1", "s9_n1")
  text, commits = _distill_tables.table(
    [str(tmp_path / n) for n in named] + [f"{tmp_path}/n1/"]  # one workdir named twice: one row
  )
  assert commits == ["abc1234"]
  assert [row[:7] for row in _cells(text)] == [
    ["digits", "9.5% sparsity", "1 (one-shot)", "-", "0.980", "0.900", "0.100"],
    ["digits", "80% sparsity", "1 (one-shot)", "-", "0.980", "0.800", "0.200"],
    ["digits", "97% sparsity", "1 (one-shot)", "-", "0.980", "0.550", "1.44"],
    ["digits", "97% sparsity", "2", "linear", "0.980", "0.571", "1.43"],
    ["digits", "97% sparsity", "4", "geometric", "0.980", "0.600", "0.500"],
    ["digits", "width x 0.0312", "2", "width", "0.980", "0.700", "0.400"],
    ["MNIST-5k", "97% sparsity", "1 (one-shot)", "-", "0.980", "0.500", "1.26"],
  ]
  assert {tuple(row[7:]) for row in _cells(text)} == {("40", "`abc1234`")}


def test_a_recursive_row_has_every_generation_and_the_range_of_ratios_against_the_rate(tmp_path):
  _recursive_run(tmp_path / "h4", 0.5, [1.35, 0.953, 0.678], hidden=(4,))
  _recursive_run(tmp_path / "h128_a0.2", 0.2, [0.4, 0.32, 0.256])
  _recursive_run(tmp_path / "h128_a0.5", 0.5, [0.4, 0.2, 0.08])
  text, _ = _distill_tables.table([str(tmp_path / n) for n in ("h4", "h128_a0.2", "h128_a0.5")])
  assert "KL(p_base ‖ q_k), k = 0..2" in text.splitlines()[0]
  assert [row[:7] for row in _cells(text)] == [
    ["digits", "128", "0.5", "0.400, 0.200, 0.0800", "0.40-0.50", "0.5", "0.700"],
    ["digits", "128", "0.2", "0.400, 0.320, 0.256", "0.80", "0.8", "0.700"],
    ["digits", "4", "0.5", "1.35, 0.953, 0.678", "0.71", "0.5", "0.700"],
  ]
  assert _distill_tables.ratio_range([0.4, 0.4]) == "1.00"
  assert _distill_tables.ratio_range([0.0, 0.0]) == "-"


def test_an_unfinished_run_or_runs_of_two_kinds_are_errors_naming_them(tmp_path):
  _compress_run(tmp_path / "short", 4, "linear", [(0.9, 0.1), (0.8, 0.2)])  # stages 3, 4 missing
  with pytest.raises(
    _run_tables.IncompleteRun, match=r"short: has stages \[1, 2\].*\[1, 2, 3, 4\]"
  ):
    _distill_tables.read_run(str(tmp_path / "short"))
  _compress_run(tmp_path / "stopped", 1, "linear", [(0.5, 1.0)])
  (tmp_path / "stopped" / "stage_1" / "config.json").write_text(
    (tmp_path / "stopped" / "stage_1" / "config.json")
    .read_text()
    .replace('"steps": 40', '"steps": 80')
  )
  with pytest.raises(_run_tables.IncompleteRun, match="last logged at step 40 of 80"):
    _distill_tables.read_run(str(tmp_path / "stopped"))
  (tmp_path / "teacher").mkdir()
  with pytest.raises(MissingFileError, match="teacher: no stage_<k> directories"):
    _distill_tables.read_run(str(tmp_path / "teacher"))
  (tmp_path / "short" / "stage_3").mkdir()  # started: no config.json yet
  with pytest.raises(MissingFileError, match="stage_3/config.json does not exist"):
    _distill_tables.read_run(str(tmp_path / "short"))
  _compress_run(tmp_path / "extra", 1, "linear", [(0.5, 1.0)])
  _stage(tmp_path / "extra" / "stage_2", 0.5, 1.0)  # a stage its config does not have
  with pytest.raises(DataError, match=r"has stages \[1, 2\], a finished compress run has \[1\]"):
    _distill_tables.read_run(str(tmp_path / "extra"))
  _compress_run(tmp_path / "c", 1, "linear", [(0.5, 1.0)])
  _recursive_run(tmp_path / "r", 0.5, [0.4, 0.2])
  with pytest.raises(ConfigError, match="one kind"):
    _distill_tables.table([str(tmp_path / "c"), str(tmp_path / "r")])


PAGE = "# Distillation\n\n<!-- t:start -->\ntyped\n<!-- t:end -->\n\nafter\n"


def test_the_command_writes_its_table_with_a_command_that_regenerates_it(tmp_path):
  _compress_run(tmp_path / "runs" / "n1", 1, "linear", [(0.55, 1.436)])
  _compress_run(tmp_path / "runs" / "n2", 2, "linear", [(0.9, 0.1), (0.571, 1.432)])
  page = tmp_path / "page.md"
  page.write_text(PAGE)
  args = [f"--runs={tmp_path}/runs/*", f"--into={page}", "--marker=t"]
  done = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=REPO)
  assert done.returncode == 0, done.stderr
  text = page.read_text()
  assert text.startswith("# Distillation\n\n<!-- t:start -->\n") and text.endswith("\n\nafter\n")
  body = _doc_tables.blocks(text)["t"]
  assert "typed" not in body and f"commit `{_doc_tables.commit()}`" in body
  assert [r[2] for r in _cells(body.split("\n\n")[-1])] == ["1 (one-shot)", "2"]
  (line,) = [x for x in body.splitlines() if x.startswith("    python launch/summarize_distill.py")]
  page.write_text(PAGE)
  again = subprocess.run(
    [sys.executable, *shlex.split(line)[1:]], capture_output=True, text=True, cwd=REPO
  )
  assert again.returncode == 0, again.stderr
  assert page.read_text() == text
  with pytest.raises(ConfigError, match="--into and --marker go together"):
    _doc_tables.check_into(None, "t")  # the first thing the command checks
