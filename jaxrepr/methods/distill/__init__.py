"""Probability-domain distillation: softening operators, their axioms, and anchored meta-teachers.

Flouro & Chadwick, "Sparse Knowledge Distillation" (arXiv 2601.03195) and "Recursive
Meta-Distillation" (arXiv 2601.13100). `operators` holds the operator families and meta-teacher
operators (pure, jittable); `axioms` holds the axioms as executable checks and the KL / contraction
measurements. The training entry points (`build`, multi-stage and recursive runs) live elsewhere in
this package once added.
"""

from jaxrepr.methods.distill.axioms import (
    CheckResult,
    check_contraction,
    check_family,
    check_meta_teacher,
    contraction_ratio,
    entropy,
    kl,
)
from jaxrepr.methods.distill.operators import (
    FAMILIES,
    META_TEACHERS,
    OperatorFamily,
    aggregate_teachers,
    anchored_geometric,
    anchored_mixture,
    geometric,
    get_family,
    get_meta_teacher,
    hard_label_teacher,
    hybrid,
    mixture,
    power,
    realisable_recursion,
    soften_logits,
    soften_revealed,
    soften_top_k,
    top_k_truncate,
)

__all__ = [
    "CheckResult", "check_contraction", "check_family", "check_meta_teacher", "contraction_ratio",
    "entropy", "kl", "FAMILIES", "META_TEACHERS", "OperatorFamily", "aggregate_teachers",
    "anchored_geometric", "anchored_mixture", "geometric", "get_family", "get_meta_teacher",
    "hard_label_teacher", "hybrid", "mixture", "power", "realisable_recursion", "soften_logits",
    "soften_revealed", "soften_top_k", "top_k_truncate",
]
