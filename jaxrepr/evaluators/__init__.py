"""Evaluators: `config.evals.<name>.kind = 'module'` selects `jaxrepr.evaluators.module.Evaluator`.

The contract (what the trainer and launch/eval.py know about an evaluator):

    config.evals.<name> = dict(kind='<module>', every=<steps>, **fields)
        kind    the module of this package (jaxrepr/config.py:evaluator_class looks it up)
        every   run every that many steps; 0: only at the end of the run (and in launch/eval.py)
        fields  everything else: keyword arguments of the constructor (`evaluator_fields`)

    Evaluator(*, config, method, mesh, workdir, **fields)
        config   the run's whole ConfigDict; method: its `jaxrepr.methods.base.Method`
        mesh     the run's device mesh; workdir: where files may be written ('' in some tests)
        Check everything the evaluator needs (data files, other runs, packages) here, raising a
        one-line `jaxrepr.errors` error: the trainer builds evaluators before its first step.

    Evaluator.run(params, rng, step) -> {metric: float}
        called inside the run's mesh (`jax.set_mesh`) on every process, with the current
        parameters, a key folded from the run's evaluation key and the step, and the step number;
        only process 0 writes files. The trainer logs the metrics as `<name>/<metric>`.

An evaluator may import data modules (its evaluation data) and method packages (what it calls
besides `method.predict`), and reads optional data-module hooks through jaxrepr/data/__init__.py.
"""

from __future__ import annotations

from typing import Any

import ml_collections

RESERVED_FIELDS = ("kind", "every")


def evaluator_fields(eval_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The constructor keywords of `config.evals.<name>`: every field but `kind` and `every`."""
  return {k: v for k, v in eval_cfg.items() if k not in RESERVED_FIELDS}
