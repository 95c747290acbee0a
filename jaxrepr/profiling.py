"""A jax.profiler trace of a window of training steps (`config.profile_steps`, `profile_start`).

The trace covers steps [start, start + steps) of this run, after the step has compiled, so it shows
the steady state. It is written under <workdir>/tensorboard/plugins/profile/<timestamp>/: open it
with TensorBoard's profile plugin (`pip install tensorboard tensorboard-plugin-profile`, then
`tensorboard --logdir <workdir>/tensorboard`, tab "Profile", tool "trace_viewer" or "op_profile"),
or drop the `*.trace.json.gz` / `perfetto_trace.json.gz` file on https://ui.perfetto.dev. Only
process 0 traces.
"""

from __future__ import annotations

import os

import jax


class StepProfiler:
  """Starts a trace before step `start` and stops it once `steps` steps have finished."""

  def __init__(self, workdir: str, start: int, steps: int, enabled: bool = True):
    self.logdir = os.path.join(workdir, "tensorboard")
    self.start, self.end = start, start + steps
    self.enabled = enabled and steps > 0
    self.active = False

  def __enter__(self) -> StepProfiler:
    return self

  def __exit__(self, *exc) -> None:
    """A run that raised (a NaN metric, a bad batch) still closes its trace."""
    if self.active:
      self.active = False
      try:
        jax.profiler.stop_trace()
      except Exception as e:  # never hide the error that ended the run
        print(f"could not close the profiler trace: {e}", flush=True)

  def before_step(self, step: int) -> None:
    if self.enabled and not self.active and step == self.start:
      jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
      self.active = True

  def after_step(self, step: int, state) -> None:
    if self.active and step >= self.end:
      self.stop(state)

  def stop(self, state) -> None:
    """Waits for the traced steps to finish on the device, then writes the trace."""
    if not self.active:
      return
    jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self.active = False
    self.enabled = False
    print(
      f"profile of steps {self.start}-{self.end - 1} written to "
      f"{os.path.join(self.logdir, 'plugins', 'profile')}",
      flush=True,
    )
