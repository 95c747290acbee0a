"""A docs table generated from kept run records (launch/keep_runs.py, `results/`) is regenerated
here by the command stated beside it and must come out the same: a number edited by hand, a record
changed or dropped, or a command that no longer gives that table turns this red. A table whose runs
live only in a workdir (`runs/...`, not in the repository) cannot be checked so; those are listed in
NOT_KEPT, and a new one fails until its runs are kept."""

import glob
import os
import shlex
import subprocess
import sys

from launch import _doc_tables, _run_tables
from tests.core.helpers import REPO

# Generated tables whose runs were not kept in `results/` when they were made: (page, block).
NOT_KEPT = {
  ("docs/contrastive.md", "xor"),
  ("docs/contrastive.md", "strips"),
  ("docs/set_tasks.md", "set-max"),
  ("docs/lpn.md", "lpn-main"),
  ("docs/lpn.md", "lpn-table1"),
}


# The commands that write a generated results table from run records.
SUMMARIZE = (
  "python launch/summarize_runs.py",
  "python launch/summarize_distill.py",
  "python launch/enroll_report.py",
)


def _summarize_command(body: str) -> list[str] | None:
  for line in body.splitlines():
    if line.strip().startswith(SUMMARIZE):
      return shlex.split(line)
  return None


def _runs(cmd: list[str]) -> list[str]:
  return [p for a in cmd if a.startswith("--runs=") for p in a.split("=", 1)[1].split(",")]


def _generated_lines(body: str) -> list[str]:
  """The block without its first line (the commit of the checkout that wrote it) and the command
  (here it writes into a copy of the page)."""
  lines = body.strip("\n").splitlines()[1:]
  return [line for line in lines if not line.strip().startswith(SUMMARIZE)]


def regeneration_problem(page: str, name: str, body: str, tmp_dir: str) -> str | None:
  """Runs the block's stated command into a copy of the page; what differs from `body`, or None."""
  cmd = _summarize_command(body)
  copy = os.path.join(tmp_dir, os.path.basename(page))
  with open(copy, "w") as f:
    f.write(f"<!-- {name}:start -->\n<!-- {name}:end -->\n")
  args = [a for a in cmd[1:] if not a.startswith(("--into=", "--out="))] + [f"--into={copy}"]
  if any(a.startswith("--out=") for a in cmd):  # a table file or figures: not over the docs' own
    args.append(f"--out={os.path.join(tmp_dir, 'out')}")
  done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO)
  if done.returncode != 0:
    return f"{page} block {name!r}: its command failed: {done.stderr.strip()[-500:]}"
  with open(copy) as f:
    again = _doc_tables.blocks(f.read(), copy)[name]
  if _generated_lines(again) != _generated_lines(body):
    got = "\n".join(_generated_lines(again))
    return f"{page} block {name!r} differs from what its command gives now:\n{got}"
  return None


def _summarized_blocks():
  pages = sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))) + [os.path.join(REPO, "README.md")]
  for path in pages:
    page = os.path.relpath(path, REPO)
    for name, body in _doc_tables.blocks(open(path).read(), page).items():
      if (cmd := _summarize_command(body)) is not None:
        yield page, name, body, cmd


def test_every_table_from_kept_runs_is_what_its_command_gives(tmp_path):
  problems, kept = [], 0
  for page, name, body, cmd in _summarized_blocks():
    if all(p.startswith("results/") for p in _runs(cmd)):
      kept += 1
      problems.append(regeneration_problem(page, name, body, str(tmp_path)))
  assert kept > 0, "no docs table is generated from kept runs (results/)"
  assert not [p for p in problems if p], "\n".join(p for p in problems if p)


def test_every_other_generated_table_is_listed_as_not_kept():
  found = {
    (page, name)
    for page, name, _, cmd in _summarized_blocks()
    if not all(p.startswith("results/") for p in _runs(cmd))
  }
  new = found - NOT_KEPT
  assert not new, f"keep the runs of these tables (launch/keep_runs.py --into=results/...): {new}"
  gone = NOT_KEPT - found
  assert not gone, f"their runs are kept now (or the tables are gone): take them out: {gone}"


def test_an_edited_number_or_a_changed_record_is_caught(tmp_path):
  runs = tmp_path / "results"
  for seed, value in ((0, 0.90), (1, 0.94)):
    run = runs / f"cnn_s{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"train": {"steps": 10, "batch_size": 8}}')
    (run / "metrics.jsonl").write_text(f'{{"step": 10, "test/accuracy": {value}}}\n')
  groups = _run_tables.group_runs(_run_tables.expand([f"{runs}/*"]), r"_s(\d+)$")
  table = _run_tables.table(groups, ["test/accuracy"], 100.0, 1, False)[0]
  cmd = (
    f"python launch/summarize_runs.py '--runs={runs}/*' --metric=test/accuracy --scale=100.0 "
    "--digits=1 --into=docs/p.md --marker=t"
  )
  body = _doc_tables.results_block(table, cmd, "abc1234", [], [])
  assert regeneration_problem("docs/p.md", "t", body, str(tmp_path)) is None
  edited = body.replace("92.0 +- 2.8", "92.5 +- 2.8")
  assert "differs" in regeneration_problem("docs/p.md", "t", edited, str(tmp_path))
  (runs / "cnn_s1" / "metrics.jsonl").write_text('{"step": 10, "test/accuracy": 0.96}\n')
  assert "differs" in regeneration_problem("docs/p.md", "t", body, str(tmp_path))
