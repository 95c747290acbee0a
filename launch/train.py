"""Train any jaxrepr experiment.

    python launch/train.py --config=configs/lpn.py
    python launch/train.py --config=configs/lpn.py:arc --config.train.steps=200000 \
        --workdir=/runs/arc

Without --workdir the run lives in runs/<config name>[_<variant>...], so re-running the same command
resumes it. The workdir is locked while the run lives; a workdir holding another model's checkpoints
or an earlier run's metrics is an error, and --overwrite moves it aside (to <workdir>.<timestamp>)
to start over. SIGTERM and the first Ctrl-C save a checkpoint at the current step and exit.
Configuration, data and workdir errors print one `error: ...` line (the traceback with
--verbosity=1 or JAXREPR_TRACEBACK=1). A config with a `stages` section (configs/distill.py) runs
the method's whole multi-stage experiment, one trainer run per stage in <workdir>/<stage>.
Multi-process runs: see docs/parallelism.md ("Multi-host"); under SLURM or on a TPU VM the
coordinator is found from the environment, or give --coordinator/--num_processes/--process_id.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config name>).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_OVERWRITE = flags.DEFINE_boolean(
  "overwrite", False, "Start over: move an existing workdir aside to <workdir>.<timestamp> first."
)
flags.mark_flag_as_required("config")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from jaxrepr import host_memory

  host_memory.apply(_CONFIG.value)  # may restart the process: before anything else is loaded
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    from jaxrepr import config as config_lib, parallel, train

    multi_process = parallel.multi_process_requested(_COORDINATOR.value)
    # on stderr: the first line of stdout says whether the run starts fresh or resumes
    settings = parallel.apply_process_settings(
      _CONFIG.value, multi_process, config_lib.evaluator_class
    )
    print("\n".join(settings), file=sys.stderr, flush=True)
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config_path = config_flags.get_config_filename(flags.FLAGS["config"])
    workdir = _WORKDIR.value or os.path.join("runs", config_lib.config_name(config_path))
    train.run_experiment(_CONFIG.value, workdir, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  app.run(main)
