"""Evaluators: `config.evals.<name>.kind = 'module'` selects `jaxrepr.evaluators.module.Evaluator`.

Interface: `Evaluator(config=, method=, mesh=, workdir=, **fields)` and
`run(params, rng, step) -> {metric: float}`, called inside the run's mesh on every process.
"""
