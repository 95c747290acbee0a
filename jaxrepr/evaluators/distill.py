"""Distillation evaluator: accuracy and KL(p_reference || q_student) on a held-out split.

Fields (config.evals.<name>): split ('test'), batch_size (global; padded last batch, masked out),
reference_workdir (the frozen reference model, e.g. the original teacher of a multi-stage chain or
the base teacher p* of recursive distillation; default: config.model.teacher_workdir).

Papers: Flouro & Chadwick, "Recursive Meta-Distillation: An Axiomatic Framework for Iterative
Knowledge Refinement" (arXiv 2601.13100) and "Sparse Knowledge Distillation: A Mathematical
Framework for Probability-Domain Temperature Scaling and Multi-Stage Compression" (arXiv
2601.03195).

Metrics:
  accuracy          top-1 accuracy of the student.
  kl_reference      mean over examples of KL(p_ref || q) at T = 1, p_ref = softmax(reference
                    logits), q = softmax(student logits): the quantity that recursive distillation
                    contracts (arXiv 2601.13100, abstract; jaxrepr's formalisation of the bound in
                    `jaxrepr.methods.distill.meta_axioms`) and the per-stage "KL to the teacher" of
                    multi-stage compression (arXiv 2601.03195, abstract, components ii-iii).
  l1_reference      mean ||p_ref - q||_1 (twice the total variation; exact (1 - alpha)^k contraction
                    in the realisable case).
  agreement         fraction of examples where the student's argmax equals the reference's.
  reference_accuracy  the reference model's own accuracy on the same rows.
  cross_entropy     the student's cross-entropy on the labels.
  kernel_sparsity   fraction of exactly-zero kernel entries in the evaluated parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrepr import parallel, registry
from jaxrepr.errors import ConfigError
from jaxrepr.evaluators._batched import sum_over_batches
from jaxrepr.methods.classifier import model as classifier_model
from jaxrepr.methods.distill import student as student_lib


class Evaluator:
  def __init__(
    self,
    *,
    config,
    method,
    mesh,
    workdir,
    split: str = "test",
    batch_size: int = 512,
    reference_workdir: str | None = None,
  ):
    del workdir
    parallel.check_batch_size(batch_size, mesh, "config.evals.<name>.batch_size")
    reference_workdir = reference_workdir or config.model.get("teacher_workdir")
    if not reference_workdir:
      raise ConfigError(
        "the distill evaluator needs config.evals.<name>.reference_workdir or "
        "config.model.teacher_workdir (the model to measure the KL against)"
      )
    reference = student_lib.load_frozen(reference_workdir)
    reference_model = classifier_model.make_model(reference.model_cfg)
    self._arrays = registry.data_module(config).eval_arrays(config.data, split)
    self._mesh, self._batch_size = mesh, batch_size

    def sums(params, batch, rng):
      z_BxV = method.predict(params, batch, rng).astype(jnp.float32)
      z_ref_BxV = classifier_model.logits_fn(
        reference_model, reference.params, batch["image"], None, train=False
      ).astype(jnp.float32)
      m_B = batch["mask"]
      log_q_BxV = jax.nn.log_softmax(z_BxV, axis=-1)
      log_p_BxV = jax.nn.log_softmax(z_ref_BxV, axis=-1)
      p_BxV = jnp.exp(log_p_BxV)
      kl_B = jnp.sum(p_BxV * (log_p_BxV - log_q_BxV), axis=-1)
      l1_B = jnp.sum(jnp.abs(p_BxV - jnp.exp(log_q_BxV)), axis=-1)
      ce_B = -jnp.take_along_axis(log_q_BxV, batch["label"][:, None], axis=-1)[:, 0]
      pred_B, ref_pred_B = z_BxV.argmax(-1), z_ref_BxV.argmax(-1)
      return {
        "correct": ((pred_B == batch["label"]) * m_B).sum(),
        "reference_correct": ((ref_pred_B == batch["label"]) * m_B).sum(),
        "agree": ((pred_B == ref_pred_B) * m_B).sum(),
        "kl": (kl_B * m_B).sum(),
        "l1": (l1_B * m_B).sum(),
        "cross_entropy": (ce_B * m_B).sum(),
        "count": m_B.sum(),
      }

    self._sums = jax.jit(sums, out_shardings=parallel.replicated(mesh))

  def run(self, params, rng, step) -> dict[str, float]:
    del step
    total = sum_over_batches(self._sums, params, self._arrays, self._batch_size, self._mesh, rng)
    n = total["count"]
    return {
      "accuracy": total["correct"] / n,
      "kl_reference": total["kl"] / n,
      "l1_reference": total["l1"] / n,
      "agreement": total["agree"] / n,
      "reference_accuracy": total["reference_correct"] / n,
      "cross_entropy": total["cross_entropy"] / n,
      "kernel_sparsity": student_lib.kernel_sparsity(parallel.fetch(params)),
    }
