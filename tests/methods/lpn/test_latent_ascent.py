"""The latent ascent shared by LPN training and test-time search, on a score with a known optimum.

score(z_b) = -|z_b - t_b|^2 for a batch of latents: each latent's gradient is its own, so a latent's
trajectory must not depend on the others (the gradients are clipped per latent), the visited
scores must be the score of the visited latents, and the loop and unrolled forms give the same
numbers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.methods.lpn import latent_ascent

B, Z, STEPS, LR = 3, 4, 6, 0.3


def _score(theta_BxZ, z_BxZ):
  return -jnp.sum(jnp.square(z_BxZ - theta_BxZ), axis=-1)


@functools.partial(jax.jit, static_argnames=("unroll", "stop_gradient", "score_last"))
def _ascent(theta_BxZ, z0_BxZ, unroll=False, stop_gradient=True, score_last=True):
  return latent_ascent.gradient_ascent(
    functools.partial(_score, theta_BxZ),
    z0_BxZ,
    STEPS,
    LR,
    stop_gradient=stop_gradient,
    score_last=score_last,
    unroll=unroll,
  )


def _inputs():
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k1, (B, Z)), jax.random.normal(k2, (B, Z))


def test_visits_and_scores_for_loop_and_unrolled():
  theta, z0 = _inputs()
  visited, scores = _ascent(theta, z0)
  assert visited.shape == (STEPS + 1, B, Z) and scores.shape == (STEPS + 1, B)
  np.testing.assert_array_equal(visited[0], z0)
  np.testing.assert_allclose(scores, jax.vmap(functools.partial(_score, theta))(visited), rtol=1e-6)
  assert np.all(np.asarray(scores[-1]) > np.asarray(scores[0]) + 0.1)  # it ascends
  unrolled = _ascent(theta, z0, unroll=True)
  np.testing.assert_allclose(unrolled[0], visited, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(unrolled[1], scores, rtol=1e-6, atol=1e-7)
  no_last = _ascent(theta, z0, score_last=False)[1]
  np.testing.assert_array_equal(no_last[:-1], scores[:-1])
  assert np.all(np.isneginf(np.asarray(no_last[-1])))


def test_a_latent_trajectory_ignores_the_other_latents():
  """Latent 0's target moves far away (its gradient norm far above the clipping norm 1): the other
  latents' trajectories are unchanged, while latent 0's changes."""
  theta, z0 = _inputs()
  base = _ascent(theta, z0)[0]
  moved = _ascent(theta.at[0].add(100.0), z0)[0]
  np.testing.assert_array_equal(moved[:, 1:], base[:, 1:])
  assert float(jnp.max(jnp.abs(moved[:, 0] - base[:, 0]))) > 1e-2


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_cuts_the_derivative_through_the_moves(stop_gradient):
  """With stop_gradient the final latent carries no derivative w.r.t. the score's parameters (the
  start does not depend on them); without it, it does."""
  theta, z0 = _inputs()
  last = lambda t: jnp.sum(_ascent(t, z0, stop_gradient=stop_gradient)[0][-1])
  grad_norm = float(jnp.linalg.norm(jax.grad(last)(theta)))
  if stop_gradient:
    assert grad_norm == 0.0
  else:
    assert grad_norm > 1e-2
