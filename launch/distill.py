"""Run a multi-stage distillation experiment (teacher, then one trainer run per stage).

    python launch/distill.py --config=configs/distill.py:multistage
    python launch/distill.py --config=configs/distill.py:recursive --workdir=/runs/recursive

Without --workdir the run lives in runs/<config name>[_<variant>...]; re-running the same command
resumes the unfinished stage and reads the finished ones. Outputs: <workdir>/teacher,
<workdir>/stage_k (each a normal trainer workdir), report.json and report.png.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config name>).")
flags.mark_flag_as_required("config")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
  from jaxrepr import config as config_lib
  from jaxrepr.methods.distill import stages

  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or os.path.join("runs", config_lib.config_name(config_path))
  stages.run(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main)
