"""Length buckets inside one compiled program, with exact gradients at the cost of one branch.

Sets (or sequences) of varying size are padded to one maximum so that one program serves every
size. The price is the compute spent on padding: for sizes uniform in [300, 599] padded to 599, a
quarter of the work on average. A `lax.switch` over a few bucket lengths recovers most of it: each
branch runs the loss on the batch cut to its length, and the smallest length that holds the batch's
largest valid size is taken. Cutting is exact (up to float rounding) for a loss that ignores
padding, as masked Set Transformer blocks do: outputs at valid positions do not depend on the padded
length.

Why a custom VJP: differentiating a plain `lax.switch` makes JAX linearise every branch and keep
each branch's residuals, so a 4-way switch of the clustering loss made the whole training step
1.3x slower and an 8-way one 2x slower than no bucketing. Here every branch computes its own value
and gradient (`jax.value_and_grad` inside the branch) and the custom VJP hands the selected branch's
gradient, scaled by the incoming cotangent, to the outer differentiation: one branch runs, forward
and backward, and the residual is one parameter-sized gradient.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def bucket_lengths(min_len: int, max_len: int, num_buckets: int) -> tuple[int, ...]:
  """Increasing lengths ending at `max_len` that split [min_len, max_len] into near-equal ranges.

  bucket_lengths(300, 599, 4) == (374, 449, 524, 599); num_buckets=1 gives (max_len,).
  """
  if not 1 <= min_len <= max_len:
    raise ValueError(f"bucket lengths need 1 <= min_len <= max_len, got {min_len}, {max_len}")
  if num_buckets < 1:
    raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
  span = max_len - min_len + 1
  return tuple(
    sorted({min_len - 1 + -(-span * (i + 1) // num_buckets) for i in range(num_buckets)})
  )


def _check_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
  lengths = tuple(sorted(set(int(n) for n in lengths)))
  if not lengths or lengths[0] < 1:
    raise ValueError(f"bucket lengths must be positive, got {lengths}")
  return lengths


def bucket_index(lengths: Sequence[int], n: jax.Array) -> jax.Array:
  """Index of the smallest of the increasing `lengths` that is >= n (the last one if none is)."""
  return jnp.minimum(jnp.searchsorted(jnp.asarray(lengths), n, side="left"), len(lengths) - 1)


def bucketed_call(
  fn: Callable[[Any], Any],
  lengths: Sequence[int],
  length_of: Callable[[Any], jax.Array],
  cut: Callable[[Any, int], Any],
) -> Callable[[Any], Any]:
  """`fn(cut(data, L))` for the smallest L in `lengths` with L >= `length_of(data)`, one program.

  For forward-only work (prediction, evaluation); `fn`'s outputs must not have the padded axis,
  since their shape must not depend on the branch. Use `bucketed_loss` under differentiation.
  """
  lengths = _check_lengths(lengths)
  branches = [lambda data, n=n: fn(cut(data, n)) for n in lengths]
  return lambda data: jax.lax.switch(bucket_index(lengths, length_of(data)), branches, data)


def bucketed_loss(
  loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]],
  lengths: Sequence[int],
  length_of: Callable[[Any], jax.Array],
  cut: Callable[[Any, int], Any],
) -> Callable[[Any, Any], tuple[jax.Array, Any]]:
  """`loss_fn(params, data) -> (loss, aux)` run on `cut(data, L)` for the smallest L in `lengths`
  with L >= `length_of(data)`, inside one program; differentiable in `params` only.

  `length_of(data)` is a traced int: how far the valid elements reach along the padded axis (the
  last valid position + 1 over the batch; the count of valid elements only for prefix masks);
  `cut(data, L)` returns data whose padded axis has static length L. The largest length must be the
  padded length of `data`, so every batch has a bucket. The aux output carries no gradient (as in
  `jax.value_and_grad(..., has_aux=True)`), and `data` gets a zero cotangent.
  """
  lengths = _check_lengths(lengths)

  def at_length(length):
    return lambda params, data: loss_fn(params, cut(data, length))

  def grad_at_length(length):
    return lambda params, data: jax.value_and_grad(at_length(length), has_aux=True)(params, data)

  @jax.custom_vjp
  def loss(params, data):
    return bucketed_call(lambda d: loss_fn(params, d), lengths, length_of, cut)(data)

  def loss_fwd(params, data):  # ((loss, aux), grads): the gradient is the residual
    return jax.lax.switch(
      bucket_index(lengths, length_of(data)), [grad_at_length(n) for n in lengths], params, data
    )

  def loss_bwd(grads, cotangent):
    g_loss = cotangent[0]  # the aux part of the cotangent is ignored: aux is not differentiated
    # None: a zero cotangent for every leaf of `data`, float or integer
    return jax.tree.map(lambda g: (g * g_loss).astype(g.dtype), grads), None

  loss.defvjp(loss_fwd, loss_bwd)
  return loss
