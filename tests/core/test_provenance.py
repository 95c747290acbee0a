"""The commit a run, a bench row or a docs table records: '+' marks changed code, and only code."""

import subprocess

from jaxrepr import provenance


def _git(repo, *args):
  subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path):
  for path in (
    "jaxrepr/model.py",
    "bench/results.json",
    "results/t/s0/metrics.jsonl",
    "docs/page.md",
    "README.md",
  ):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("0\n")
  _git(tmp_path, "init", "-q")
  _git(tmp_path, "add", "-A")
  _git(
    tmp_path,
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@t",
    "-c",
    "commit.gpgsign=false",
    "commit",
    "-qm",
    "c",
  )
  return tmp_path


def test_records_written_by_the_project_leave_the_commit_clean(tmp_path):
  repo = _repo(tmp_path)
  clean = provenance.commit(str(repo))
  assert clean and not clean.endswith("+") and clean != "?"
  for path in ("bench/results.json", "results/t/s0/metrics.jsonl", "docs/page.md", "README.md"):
    (repo / path).write_text("1\n")  # what bench.py, keep_runs.py and summarize_runs.py change
  assert provenance.commit(str(repo)) == clean


def test_changed_code_marks_the_commit(tmp_path):
  repo = _repo(tmp_path)
  clean = provenance.commit(str(repo))
  (repo / "jaxrepr/model.py").write_text("1\n")
  assert provenance.commit(str(repo)) == clean + "+"
  (repo / "docs/page.md").write_text("1\n")
  assert provenance.commit(str(repo)) == clean + "+"


def test_staged_deleted_and_literal_pathspec_changes_mark_it_too(tmp_path, monkeypatch):
  repo = _repo(tmp_path)
  clean = provenance.commit(str(repo))
  (repo / "results/t/s0/metrics.jsonl").unlink()
  assert provenance.commit(str(repo / "jaxrepr")) == clean  # asked from a subdirectory
  (repo / "jaxrepr/model.py").write_text("1\n")
  _git(repo, "add", "jaxrepr/model.py")
  assert provenance.commit(str(repo / "jaxrepr")) == clean + "+"
  monkeypatch.setenv("GIT_LITERAL_PATHSPECS", "1")  # ':(top)' would then be a file name
  assert provenance.commit(str(repo)) == clean + "+"
  _git(repo, "reset", "-q", "--hard")
  (repo / "jaxrepr/model.py").unlink()
  assert provenance.commit(str(repo)) == clean + "+"


def test_outside_a_checkout_it_is_a_question_mark(tmp_path):
  assert provenance.commit(str(tmp_path)) == "?"
