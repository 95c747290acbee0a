"""Distillation experiments as a user runs them: `launch/train.py --config=configs/distill.py:...`
runs the teacher and every stage; a SIGKILL in the middle of a generation and a rerun of the same
command end where an uninterrupted run ends."""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.core.helpers import REPO, train_cmd

pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO, "configs", "distill.py")
FAST = ("--config.train.log_every=1",)


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  return env


def _run(variants, workdir, *overrides):
  res = subprocess.run(
    train_cmd(f"{CONFIG}:{variants}", workdir, *FAST, *overrides),
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  return res.stdout


def _report(workdir):
  with open(os.path.join(workdir, "report.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """The tiny teacher, trained once by the first stage of a multi-stage run (launch/train.py)."""
  workdir = str(tmp_path_factory.mktemp("multistage"))
  out = _run("tiny,multistage", workdir, "--config.stages.final_sparsity=0.8")
  return workdir, out


def test_multistage_through_launch_train_runs_teacher_and_every_stage(teacher):
  workdir, out = teacher
  assert "== teacher" in out and "== stage_1" in out and "== stage_2" in out
  report = _report(workdir)
  assert report["complete"] and [r["name"] for r in report["rows"]] == [
    "teacher",
    "stage_1",
    "stage_2",
  ]
  assert os.path.exists(os.path.join(workdir, "report.png"))
  for row in report["rows"][1:]:
    assert np.isfinite(row["eval"]["kl_reference"]) and row["eval"]["accuracy"] > 0.5, row


def test_recursive_killed_mid_generation_resumes_to_the_uninterrupted_result(teacher, tmp_path):
  teacher_dir = os.path.join(teacher[0], "teacher")
  # 200 steps per generation: a wide window between the step-30 checkpoint and the end. One
  # generation after q_0: the kill lands in it, the rerun reads the finished q_0 and resumes it
  # (the stages after a resumed generation: test_distill_training's preempted recursive run).
  use_teacher = (
    f"--config.stages.teacher_workdir={teacher_dir}",
    "--config.train.steps=200",
    "--config.stages.generations=1",
  )
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _run("tiny,recursive", straight, *use_teacher)
  # Generation 0 as the killed command would have finished it (same command, same q_0), so the
  # killed process starts in generation 1 and no stage is trained twice for nothing.
  shutil.copytree(os.path.join(straight, "stage_0"), os.path.join(killed, "stage_0"))

  with open(tmp_path / "killed.err", "w") as err:  # a file: a full pipe would block the child
    proc = subprocess.Popen(
      train_cmd(f"{CONFIG}:tiny,recursive", killed, *FAST, *use_teacher),
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=err,
    )
  tail = lambda: (tmp_path / "killed.err").read_text()[-2000:]
  generation_1 = os.path.join(killed, "stage_1")
  deadline = time.time() + 300
  # Kill once the step-30 checkpoint is committed (Orbax renames its temporary directory to "30"
  # when the asynchronous save is complete), well before the end of the generation.
  while not os.path.isdir(os.path.join(generation_1, "checkpoints", "30")):
    assert proc.poll() is None, (
      f"ended (rc={proc.returncode}) before step 30 of generation 1: " + tail()
    )
    assert time.time() < deadline, f"generation 1 saved no step-30 checkpoint in 300 s: {tail()}"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, "report.json"))

  out = _run("tiny,recursive", killed, *use_teacher)
  assert "== stage_0" not in out  # the finished generation is read, not retrained
  assert "== stage_1" in out, f"generation 1 finished before the kill landed:\n{out}"
  assert "resuming from step" in out.split("== stage_1")[1]
  rows, expected = _report(killed)["rows"], _report(straight)["rows"]
  assert [r["name"] for r in rows] == ["teacher", "stage_0", "stage_1"]
  for row, want in zip(rows[1:], expected[1:]):
    np.testing.assert_allclose(
      row["eval"]["kl_reference"], want["eval"]["kl_reference"], rtol=1e-5, err_msg=row["name"]
    )
