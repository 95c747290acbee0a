"""Evaluate the latest checkpoint of a run with the config's evaluators.

    python launch/eval.py --config=configs/lpn.py:arc_small --workdir=runs/lpn_arc_small \
        --search=evolution --budget=200
    python launch/eval.py --config=configs/lpn.py:pattern --workdir=runs/lpn_pattern \
        --search=gradient_ascent --budget=301 --search_lr=0.1
    # another task source: any ARC JSON directory (one task per file) or Kaggle challenges file
    python launch/eval.py --config=configs/lpn.py:arc_small --workdir=runs/lpn_arc_small \
        --config.data.source=path --config.data.eval_path=/data/my_arc_tasks

--search/--budget replace the `searches` of every evaluator that has them with one search of that
method and budget (in latent evaluations; see jaxrepr/methods/lpn/search.py for the cost of each
method). Results are printed and written to <workdir>/eval_step<N>.json. The step evaluated is the
newest checkpoint that restores; if that is not the last step metrics.jsonl reports (a newer
checkpoint is unreadable, or the run is still training), the first line says which and why.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "The run's config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (default: runs/<config name>).")
_EVALS = flags.DEFINE_list("evals", None, "Evaluators of config.evals to run (default: all).")
_SEARCH = flags.DEFINE_string("search", None, "Search method (replaces the evaluators' searches).")
_BUDGET = flags.DEFINE_integer("budget", None, "Search budget in latent evaluations.")
_SEARCH_LR = flags.DEFINE_float("search_lr", None, "Learning rate of gradient-ascent search.")
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  from jaxrepr import host_memory

  host_memory.apply(_CONFIG.value)  # may restart the process: before anything else is loaded
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from jaxrepr import errors

  with errors.reported(flags.FLAGS.verbosity):
    _evaluate(_CONFIG.value)


def _last_logged_step(workdir: str) -> int | None:
  """The last step metrics.jsonl reports (None without the file): what the run says it reached."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  steps = []
  with open(path) as f:
    for line in f:
      try:
        steps.append(int(json.loads(line)["step"]))
      except (ValueError, KeyError, TypeError):
        continue  # a half-written last line of a run still writing
  return max(steps, default=None)


def _evaluate(config):
  import jax

  from jaxrepr import checkpoint, config as config_lib, parallel, train
  from jaxrepr.errors import MissingFileError

  # on stderr: the first line of stdout names the step evaluated
  settings = parallel.apply_process_settings(
    config, parallel.multi_process_requested(None), config_lib.evaluator_class
  )
  print("\n".join(settings), file=sys.stderr, flush=True)
  workdir = _WORKDIR.value or os.path.join(
    "runs", config_lib.config_name(config_flags.get_config_filename(flags.FLAGS["config"]))
  )
  names = _EVALS.value or list(config.evals.keys())
  unknown = [n for n in names if n not in config.evals]
  if unknown:
    raise app.UsageError(f"--evals {unknown} are not in config.evals ({list(config.evals)})")
  if _SEARCH.value:
    search = {"mode": _SEARCH.value}
    if _BUDGET.value is not None:
      search["budget"] = _BUDGET.value
    if _SEARCH_LR.value is not None:
      search["lr"] = _SEARCH_LR.value
    label = _SEARCH.value + (f"_b{_BUDGET.value}" if _BUDGET.value is not None else "")
    with config.unlocked():
      for n in names:
        config.evals[n].searches = {label: search}
        if config.evals[n].get("budgets"):  # an equal-budget table would add its own searches
          config.evals[n].budgets = ()
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    raise MissingFileError(
      f"{checkpoints}: no checkpoints to evaluate (train the run first with "
      f"python launch/train.py --config=... --workdir={workdir})"
    )
  run = train.build(config)
  ckpt = checkpoint.Checkpointer(checkpoints, config.train.keep_checkpoints, read_only=True)
  restored = ckpt.restore_latest(
    checkpoint.abstract_like(run.state),
    start_over="Evaluate with the config (and variants, overrides) the run was trained with",
  )
  if restored is None:
    raise MissingFileError(f"{checkpoints}: no checkpoint that restores")
  step, run.state, _ = restored
  outs = train.outputs(run, workdir)  # one per replica of a multi-seed or sweep run
  logged = _last_logged_step(outs[0].workdir)
  why = ""
  if ckpt.skipped:
    why = "; newer checkpoints could not be restored: " + ", ".join(
      f"step {s} ({reason})" for s, reason in ckpt.skipped
    )
  if logged is not None and logged != step:
    why += f"; note: metrics.jsonl reports up to step {logged}"
  print(f"evaluating step {step} of {workdir}{why}", flush=True)
  results = {}
  with jax.set_mesh(run.mesh):
    # a multi-seed or sweep run (jaxrepr/replicas.py): each replica with its own config and keys
    for out in outs:
      evaluators = train.build_evaluators(out.config, run, out.workdir, names, method=out.method)
      prefix = f"{out.name}/" if out.name else ""
      for n, evaluator in evaluators.items():
        rng = jax.random.fold_in(out.eval_rng(run), step)
        values = evaluator.run(out.params(run.state), rng, step)
        results.update({f"{prefix}{n}/{k}": float(v) for k, v in values.items()})
  ckpt.close()
  for k, v in sorted(results.items()):
    print(f"  {k} = {v:.4g}")
  if jax.process_index() == 0:
    path = os.path.join(workdir, f"eval_step{step}.json")
    with open(path, "w") as f:
      json.dump({"step": step, "results": results}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
