"""A run is never silently lost, overwritten or shared: the workdir lock, resume rules, unreadable
checkpoints, Ctrl-C, a failed save, one-line errors. Process behaviour (exit codes, signals, what is
printed) goes through launch/train.py and launch/eval.py in a subprocess."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxrepr import checkpoint, errors, train, workdir as workdir_lib
from tests.core.helpers import REPO, train_cmd
from tests.core.test_launch import _wait_for_step
from tests.core.test_train import small_config

CONFIG = os.path.join(REPO, "configs", "classifier.py") + ":mlp"
SHORT = (
  "--config.train.steps=20",
  "--config.train.batch_size=64",
  "--config.train.log_every=1",
  "--config.train.checkpoint_every=10",
  "--config.evals.test.every=0",
)


# where config.compilation_cache_dir='auto' points under the tests' XDG_CACHE_HOME (conftest.py)
_CACHE = os.path.join(os.environ["XDG_CACHE_HOME"], "jaxrepr", "xla")


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _launch(workdir, *overrides, env=None, **kwargs):
  return subprocess.run(
    train_cmd(CONFIG, str(workdir), *SHORT, *overrides),
    env=env or _env(),
    capture_output=True,
    text=True,
    timeout=300,
    **kwargs,
  )


def _train_in_process(workdir, steps=20, **model):
  config = small_config(steps=steps)
  config.model.update(model)
  return train.train_and_evaluate(config, str(workdir))


def _snapshot(workdir):
  """Every file's bytes under the workdir (the lock excepted)."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if name != workdir_lib.LOCK_NAME:
        out[os.path.relpath(path, workdir)] = open(path, "rb").read()
  return out


def _one_error_line(result):
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors_ = [l for l in lines if l.startswith("error: ")]
  assert len(errors_) == 1, result.stderr[-3000:]
  return errors_[0]


# 1. A changed model in a used workdir.


def test_a_changed_model_stops_before_training_naming_the_parameter_and_overwrite_starts_over(
  tmp_path,
):
  run = tmp_path / "run"
  _train_in_process(run)
  before = _snapshot(run)
  res = _launch(run, "--config.model.hidden=(512,128)")
  line = _one_error_line(res)
  assert str(run) in line and "another model" in line
  assert "params/Dense_0/bias is (256,) in the checkpoint but (512,) in this config" in line
  assert "--overwrite" in line
  assert _snapshot(run) == before  # nothing trained, saved, logged or rewritten
  assert not os.path.exists(run / workdir_lib.LOCK_NAME)

  again = _launch(run, "--config.model.hidden=(512,128)", "--overwrite")
  assert again.returncode == 0, again.stderr[-3000:]
  moved = [p for p in os.listdir(tmp_path) if p.startswith("run.")]
  assert (
    len(moved) == 1 and f"moved the earlier run in {run} to {tmp_path / moved[0]}" in again.stdout
  )
  assert _snapshot(tmp_path / moved[0]) == before  # the old run is kept whole
  assert "starting fresh" in again.stdout
  assert f"compilation cache: {_CACHE}\n" in again.stderr  # the default, 'auto', set and said
  rows = [json.loads(l) for l in open(run / "metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 21))


def test_the_traceback_is_shown_on_request(tmp_path):
  _train_in_process(tmp_path)
  res = _launch(
    tmp_path, "--config.model.hidden=(512,128)", env=dict(_env(), JAXREPR_TRACEBACK="1")
  )
  assert res.returncode != 0 and "Traceback" in res.stderr and "WorkdirError" in res.stderr


def test_reported_turns_user_errors_into_one_line_and_keeps_bugs(capsys):
  with pytest.raises(SystemExit) as stop:
    with errors.reported():
      raise errors.ConfigError("config.x=1: bad")
  assert stop.value.code == 1 and capsys.readouterr().err == "error: config.x=1: bad\n"
  with pytest.raises(SystemExit) as stop:
    with errors.reported():
      raise KeyboardInterrupt
  assert stop.value.code == 130
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
    with errors.reported():
      _ = 1 / 0
  with pytest.raises(errors.ConfigError):
    with errors.reported(verbosity=1):
      raise errors.ConfigError("shown with its traceback")


# 2. An unreadable latest checkpoint.


def test_an_unreadable_checkpoint_is_moved_aside_rewritten_and_eval_says_which_step(tmp_path):
  _train_in_process(tmp_path)  # checkpoints 10 and 20
  latest = tmp_path / "checkpoints" / "20"
  for root, _, files in os.walk(latest / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  eval_cmd = [
    sys.executable,
    os.path.join(REPO, "launch", "eval.py"),
    f"--config={CONFIG}",
    f"--workdir={tmp_path}",
    "--config.evals.test.batch_size=512",
  ]
  before = subprocess.run(eval_cmd, env=_env(), capture_output=True, text=True, timeout=300)
  assert before.returncode == 0, before.stderr[-3000:]
  assert f"compilation cache: {_CACHE}\n" in before.stderr  # eval.py compiles too
  first = before.stdout.splitlines()[0]
  assert first.startswith("evaluating step 10 of ") and "step 20 (" in first
  assert "metrics.jsonl reports up to step 20" in first
  assert latest.exists()  # eval only reads

  _train_in_process(tmp_path)  # resumes from 10, rewrites 20
  moved = os.listdir(tmp_path / checkpoint.UNREADABLE_DIR)
  assert len(moved) == 1 and moved[0].startswith("20.")
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 3).all_steps() == [10, 20]
  after = subprocess.run(eval_cmd, env=_env(), capture_output=True, text=True, timeout=300)
  assert (
    after.returncode == 0 and after.stdout.splitlines()[0] == f"evaluating step 20 of {tmp_path}"
  )


# 3. Checkpoints deleted, metrics kept.


def test_a_fresh_start_over_an_earlier_runs_metrics_is_refused(tmp_path):
  _train_in_process(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints")
  before = _snapshot(tmp_path)
  with pytest.raises(
    errors.WorkdirError,
    match=r"holds the metrics of an earlier run but it has "
    r"no checkpoint to resume from; to start over, rerun with --overwrite",
  ):
    _train_in_process(tmp_path)
  assert _snapshot(tmp_path) == before


def test_a_refused_fresh_start_builds_nothing(tmp_path, monkeypatch):
  _train_in_process(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints")
  monkeypatch.setattr(train, "build", lambda config: pytest.fail("built the run before refusing"))
  with pytest.raises(errors.WorkdirError, match="holds the metrics of an earlier run"):
    _train_in_process(tmp_path)


def test_a_half_copied_checkpoint_is_unreadable_not_another_model(tmp_path, capsys):
  _train_in_process(tmp_path)
  os.remove(tmp_path / "checkpoints" / "20" / "state" / "_METADATA")  # an interrupted copy
  summary = _train_in_process(tmp_path, steps=25)
  assert "checkpoints/20 could not be restored" in capsys.readouterr().err
  assert summary["step"] == 25


def test_all_checkpoints_unreadable_is_refused_too(tmp_path):
  _train_in_process(tmp_path)
  for step in ("10", "20"):
    shutil.rmtree(tmp_path / "checkpoints" / step / "state")
  with pytest.raises(errors.WorkdirError, match=r"none of its checkpoints \(steps \[20, 10\]\)"):
    _train_in_process(tmp_path)


# 4. Two processes on one workdir.


def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(tmp_path):
  first = subprocess.Popen(
    train_cmd(
      CONFIG,
      str(tmp_path),
      *SHORT,
      "--config.train.steps=100000",
      "--config.train.checkpoint_every=0",
    ),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    _wait_for_step(str(tmp_path), 3, first)
    second = _launch(tmp_path)
    line = _one_error_line(second)
    assert f"{tmp_path} is in use by pid {first.pid} on {socket.gethostname()}" in line
    assert "another --workdir" in line
    assert first.poll() is None  # the first run goes on
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  assert first.returncode == 0
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_NAME)  # released at exit


def test_a_stale_lock_is_taken_over_and_a_live_one_from_another_host_is_named(tmp_path, capsys):
  dead = subprocess.Popen(["true"])
  dead.wait()
  with open(tmp_path / workdir_lib.LOCK_NAME, "w") as f:
    json.dump({"pid": dead.pid, "host": socket.gethostname(), "since": "earlier"}, f)
  assert workdir_lib.acquire(str(tmp_path)) is True
  assert "removing the stale lock" in capsys.readouterr().err
  assert workdir_lib.acquire(str(tmp_path)) is False  # this process already holds it
  workdir_lib.release(str(tmp_path))
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_NAME)
  # A pid that is alive but was started after the lock was written (a reused pid) is stale too.
  with open(tmp_path / workdir_lib.LOCK_NAME, "w") as f:
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": 1}, f)
  assert workdir_lib.acquire(str(tmp_path)) is True
  workdir_lib.release(str(tmp_path))
  with open(tmp_path / workdir_lib.LOCK_NAME, "w") as f:
    json.dump({"pid": 1, "host": "elsewhere", "since": "earlier", "command": "train"}, f)
  with pytest.raises(
    errors.WorkdirError,
    match=r"in use by pid 1 on elsewhere .*if that run has "
    r"ended, delete .*run.lock",
  ):
    workdir_lib.acquire(str(tmp_path))
  with pytest.raises(errors.WorkdirError, match="cannot move .* aside: it is in use"):
    workdir_lib.move_aside(str(tmp_path))
  # The holder's heartbeat keeps it; once it stops for STALE_AFTER_S (its node died), it is stale.
  lock = tmp_path / workdir_lib.LOCK_NAME
  old = time.time() - workdir_lib.STALE_AFTER_S + 60
  os.utime(lock, (old, old))
  with workdir_lib.heartbeat(str(tmp_path), every=0.05):
    time.sleep(0.3)
  assert time.time() - os.stat(lock).st_mtime < 5
  os.utime(lock, (old - 120, old - 120))
  assert workdir_lib.acquire(str(tmp_path)) is True
  assert "last heartbeat 3" in capsys.readouterr().err
  workdir_lib.release(str(tmp_path))


def test_a_lock_from_before_a_reboot_is_stale_even_if_its_pid_and_start_time_match(tmp_path):
  with open(tmp_path / workdir_lib.LOCK_NAME, "w") as f:
    json.dump(
      {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": workdir_lib._start_ticks(os.getpid()),
        "boot_id": "an-earlier-boot",
      },
      f,
    )
  assert workdir_lib.acquire(str(tmp_path)) is True
  workdir_lib.release(str(tmp_path))


def test_a_lock_of_this_slurm_job_is_stale_after_a_requeue(tmp_path, monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "4242")
  with open(tmp_path / workdir_lib.LOCK_NAME, "w") as f:  # the job's run on the node that died
    json.dump({"pid": 1, "host": "node-that-died", "slurm_job": "4242"}, f)
  assert workdir_lib.acquire(str(tmp_path)) is True
  workdir_lib.release(str(tmp_path))


def test_an_unreadable_lock_counts_as_stale_once_its_heartbeat_is_old(tmp_path):
  lock = tmp_path / workdir_lib.LOCK_NAME
  lock.write_text("")  # a crash between create and write
  with pytest.raises(errors.WorkdirError, match="unreadable lock file"):
    workdir_lib.acquire(str(tmp_path))
  old = time.time() - workdir_lib.STALE_AFTER_S - 10
  os.utime(lock, (old, old))
  assert workdir_lib.acquire(str(tmp_path)) is True
  workdir_lib.release(str(tmp_path))


def test_taking_over_a_stale_lock_never_removes_another_runs_fresh_one(tmp_path):
  stale = {"pid": 1, "host": "elsewhere"}
  fresh = {"pid": 2, "host": "elsewhere", "since": "now"}
  lock = tmp_path / workdir_lib.LOCK_NAME
  lock.write_text(json.dumps(fresh))  # a racing run took over first
  workdir_lib._remove_if_still(str(lock), stale)
  assert json.loads(lock.read_text()) == fresh
  workdir_lib._remove_if_still(str(lock), fresh)
  assert not lock.exists() and os.listdir(tmp_path) == []


def test_a_running_trainer_keeps_its_lock_fresh(tmp_path, monkeypatch):
  real = workdir_lib.heartbeat
  monkeypatch.setattr(workdir_lib, "heartbeat", lambda workdir, every=0.05: real(workdir, every))
  lock = tmp_path / workdir_lib.LOCK_NAME
  with train.owned(str(tmp_path)):
    os.utime(lock, (0, 0))
    time.sleep(0.3)
    assert time.time() - os.stat(lock).st_mtime < 5
  assert not lock.exists()


# 5. Ctrl-C.


def test_the_first_sigint_saves_and_exits_cleanly(tmp_path):
  proc = subprocess.Popen(
    train_cmd(
      CONFIG,
      str(tmp_path),
      *SHORT,
      "--config.train.steps=100000",
      "--config.train.checkpoint_every=0",
    ),
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  _wait_for_step(str(tmp_path), 10, proc)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "Traceback" not in err and "Ctrl-C again aborts" in err
  step = int(
    [l for l in out.splitlines() if l.startswith("SIGINT: saved a checkpoint at step ")][0]
    .split("at step ")[1]
    .split(";")[0]
  )
  assert step >= 10
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints"), 3).all_steps() == [step]


def test_a_second_sigint_aborts_at_once():
  # The handler the guard restores: Python's default, or SIG_IGN when the test process was started
  # in the background by a shell (which starts it with SIGINT ignored).
  before = signal.getsignal(signal.SIGINT)
  with checkpoint.PreemptionGuard() as guard:
    for signum in (signal.SIGINT, signal.SIGTERM):  # fail here, not by a stray Ctrl-C ending pytest
      assert signal.getsignal(signum) == guard._handle, signal.Signals(signum).name
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)  # handlers run between bytecodes
    assert guard.requested and guard.signal_name == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)
  assert signal.getsignal(signal.SIGINT) is before
  with checkpoint.PreemptionGuard() as guard:  # after a SIGTERM, one Ctrl-C still only asks
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert guard.requested and guard.signal_name == "SIGTERM"


# 6. A failed save.


def test_a_failed_save_stops_the_run_with_one_line_naming_the_last_good_step(tmp_path):
  _train_in_process(tmp_path)  # checkpoints 10 and 20 (about 600 kB each)
  # A 64 KiB limit on the size of any file this process writes: the checkpoint's data file fails
  # with EFBIG as it would with ENOSPC on a full disk (set by the shell: no fork of this JAX
  # process).
  # no compilation cache: the file limit would leave a truncated cache entry behind
  cmd = train_cmd(
    CONFIG, str(tmp_path), *SHORT, "--config.train.steps=40", "--config.compilation_cache_dir="
  )
  res = subprocess.run(
    ["bash", "-c", 'ulimit -f 64 && exec "$@"', "bash", *cmd],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  line = _one_error_line(res)
  assert f"could not save the checkpoint of step 30 in {tmp_path / 'checkpoints'}" in line
  assert "File too large" in line and line.endswith("last good checkpoint: step 20")
  assert len(res.stderr.splitlines()) < 10, res.stderr
  steps = [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")]
  assert max(steps) == 30  # no training past the failed save
  again = _launch(tmp_path, "--config.train.steps=40")  # space again: it resumes and finishes
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming from step 20" in again.stdout
  leftovers = [p for p in os.listdir(tmp_path / "checkpoints") if not p.isdigit()]
  assert leftovers == [] or leftovers == ["_CHECKPOINT_METADATA"], leftovers
