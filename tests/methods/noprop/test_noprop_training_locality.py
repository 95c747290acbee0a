"""NoProp locality on the training path: the gradients of the loss the train step differentiates.

`test_no_gradient_crosses_blocks` (test_noprop.py) differentiates `loss.dt_block_term` alone. These
tests differentiate the loss of the method `jaxrepr.train` builds from configs/noprop.py, the
function train_step.py hands to `jax.value_and_grad`, so a gradient that crosses blocks anywhere on
the training path (`dt_block_terms`, the 'sampled' branch of `dt_loss`, the CT / FM losses) fails
here.

One `jax.vjp` of `method.loss` per case gives every gradient (`_gradients`):
  * cotangent 1 on the loss: the gradient the train step applies;
  * a one-hot cotangent on the metric that reports one loss term (DT: denoise_t<k> under
    block_schedule 'all', denoise under 'sampled'; CT: ce, kl, denoise; FM: flow, ce): the gradient
    of that term alone, along the path the loss computes it on. The step's gradient must be the
    matching sum of the term gradients, so the metrics are the terms the loss adds up;
  * a random cotangent on the inputs of every call of a DT block or of the CT/FM network (recorded
    with `flax.linen.intercept_methods` while the loss runs; the recording changes nothing): zero in
    a part of params means no network input depends on that part.

What is tested, per variant (NoProp paper, Li, Teh & Pascanu, arXiv 2503.24322 v1):
  DT, block_schedule 'all' and 'sampled' (Eq. 8, Eq. 61, Alg. 1): block t has its own parameters
    (slice t - 1 of every params['blocks'] leaf) and its own term D_t. The gradient of D_t is
    exactly zero in every other block's slice and nonzero in its own; D_t gives the classifier
    nothing (theta_out is trained by the CE term); CE and KL give no block anything; each block's
    input z_{t-1} is sampled from q(z_{t-1} | y), so it depends on no block. W_Embed is shared and
    trained by every term (Alg. 1 updates theta_t, theta_out and W_Embed): no locality boundary.
  CT (Eq. 9, Alg. 2) and FM (Eqs. 10-13, Alg. 3): one network theta, conditioned on t, serves every
    time, so there is no "other block": theta gets gradient from the term at every t by design. The
    locality that holds is that no forward pass crosses times: the network's input z_t is sampled
    from q(z_t | y) (CT) or from the conditional path (FM), never produced by the network at another
    time, so no gradient reaches theta (or the classifier) through the network's inputs. z_t does
    depend on W_Embed (and, in CT, on the learned schedule) through the reparameterised sample:
    that is the gradient of the expectation over q in Eq. 9, and allowed. Per term: CT's CE reads
    z_1 ~ q(z_1 | y) and its KL only W_Embed and the schedule, so neither reaches theta, and the
    denoising term does not reach the classifier. FM's flow term does not reach the classifier;
    its anchor CE (Eqs. 12-13) reads ztilde_1 = z_t + (1 - t) v_theta(z_t, x, t), so it does reach
    theta, as the paper writes it. `model.block_schedule` plays no part in CT / FM (no blocks).
  Back-prop baseline (the chained variant, paper §4): block t reads z_{t-1} made by blocks
    1..t-1, so gradient does cross blocks; the same probe that reads zero for NoProp must read
    exactly that here, which shows it tells the two apart.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import config as config_lib
from jaxrepr.data import images
from jaxrepr.methods.noprop import model as model_lib
from tests.core.helpers import load_config

# Two blocks, as configs/noprop.py:tiny has them: enough for a term to reach a block before it or
# after it, and for a chain to feed block 1's output into block 2.
NUM_BLOCKS = 2


@functools.cache
def _batch():
  d = images.load(images.default_config("digits"), "train")
  return {"image": jnp.asarray(d["image"][:8]), "label": jnp.asarray(d["label"][:8])}


@functools.cache
def _gradients(variant: str, block_schedule: str = "all", terms: tuple[str, ...] = ()):
  """jit(rng -> (metrics, gradients)) for the method `jaxrepr.train` builds from
  configs/noprop.py:<variant>,learned,tiny (a learned W_Embed: the variant with the most trained
  parts). The gradients (module docstring), each a params-shaped tree: 'calls' (the inputs of every
  network call, one random cotangent over all of them) and, when `terms` names loss terms, 'step'
  and 'term/<name>' for each."""
  config = load_config("noprop", f"{variant},learned,tiny")
  config.model.block_schedule = block_schedule
  config.model.num_blocks = NUM_BLOCKS
  method = config_lib.method_module(config).build(config)
  batch = _batch()

  def init():
    params = method.init(jax.random.key(0), batch)
    if "classifier" in params:
      # The classifier starts at zero, which passes no gradient back into z; a random one makes
      # every path from the CE term into the rest of the model visible.
      kernel = params["classifier"]["kernel"]
      params["classifier"]["kernel"] = jax.random.normal(jax.random.key(3), kernel.shape)
    return params

  def loss_and_network_inputs(p, rng):
    calls = []

    def record(next_fun, args, kwargs, context):
      if (
        isinstance(context.module, (model_lib.DTBlock, model_lib.CTFMNet))
        and context.method_name == "__call__"
      ):
        calls.append(tuple(args))  # (z, x) for a DT block, (z, x, t) for the CT/FM network
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # records only; the loss runs unchanged
      out = method.loss(p, batch, rng)
    return out, calls

  def run(rng):  # init inside: one compilation per case (compiling dominates these tests)
    out, pullback = jax.vjp(lambda p: loss_and_network_inputs(p, rng), init())
    (loss, metrics), calls = out
    zero_out, zero_calls = jax.tree.map(jnp.zeros_like, out)
    keys = iter(jax.random.split(jax.random.key(7), len(jax.tree.leaves(calls))))
    noise = jax.tree.map(lambda a: jax.random.normal(next(keys), a.shape), calls)
    queries = {"calls": (zero_out, noise)}
    if terms:
      queries["step"] = ((jnp.ones_like(loss), zero_out[1]), zero_calls)
      for name in terms:
        queries[f"term/{name}"] = (
          (zero_out[0], dict(zero_out[1], **{name: jnp.ones_like(loss)})),
          zero_calls,
        )
    if len(queries) == 1:
      return metrics, {"calls": pullback(queries["calls"])[0]}
    # One backward pass for all queries, batched over them: one compilation per case.
    stacked = jax.tree.map(lambda *q: jnp.stack(q), *queries.values())
    grads = jax.vmap(lambda ct: pullback(ct)[0])(stacked)
    return metrics, {k: jax.tree.map(lambda g, i=i: g[i], grads) for i, k in enumerate(queries)}

  return jax.jit(run)


def _nonzero(tree) -> bool:
  return any(np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(tree))


def _block_slices(grads, index: int):
  """(slice `index` of every params['blocks'] leaf, every other slice), as numpy arrays."""
  leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(grads["blocks"])]
  return [leaf[index] for leaf in leaves], [np.delete(leaf, index, axis=0) for leaf in leaves]


def _assert_close(actual, desired, what: str):
  """Two gradient trees equal to float32 rounding (backward passes scaled by 1/T round differently);
  judged on the whole tree, as a leaf that is analytically zero (a bias before a norm) holds only
  rounding noise."""
  a = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(actual)])
  d = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(desired)])
  assert a.shape == d.shape, what
  err, size = np.linalg.norm(a - d), np.linalg.norm(d)
  assert err <= 1e-5 * size, f"{what}: |difference| {err:.3g}, |gradient| {size:.3g}"


def _assert_term_is_local_to_block(g, t: int, what: str):
  own, others = _block_slices(g, t - 1)
  for leaf in others:
    assert np.all(leaf == 0.0), f"{what}: gradient reaches another block than block {t}"
  assert _nonzero(own), f"{what}: no gradient in block {t}'s own parameters"
  assert not _nonzero(g["classifier"]), f"{what}: gradient reaches the classifier"
  assert _nonzero(g["embed"]), f"{what}: W_Embed (shared, trained by every block) got nothing"


def _assert_inputs_independent_of(grads, parts: tuple[str, ...], what: str):
  for part in parts:
    assert not _nonzero(grads["calls"][part]), (
      f"{what}: a network's inputs depend on params[{part!r}]"
    )
  # The probe does see dependence: z is a reparameterised sample of q, of mean u_y = W_Embed[y].
  assert _nonzero(grads["calls"]["embed"]), f"{what}: the probe sees no dependence at all"


# ----------------------------------------------------------------------------------------------- DT
def test_dt_all_blocks_each_term_reaches_only_its_own_block():
  names = tuple(f"denoise_t{t}" for t in range(1, NUM_BLOCKS + 1))
  metrics, grads = _gradients("dt", "all", names + ("ce", "kl"))(jax.random.key(1))
  for name in names:
    _assert_term_is_local_to_block(grads[f"term/{name}"], int(name[len("denoise_t") :]), name)
  for name in ("ce", "kl"):
    assert not _nonzero(grads[f"term/{name}"]["blocks"]), f"{name} reaches a block"
  assert _nonzero(grads["term/ce"]["classifier"])
  _assert_inputs_independent_of(grads, ("blocks", "classifier"), "dt, all blocks")
  # The step differentiates CE + KL + mean_t D_t: block t's slice holds D_t / T alone and the
  # classifier's is CE's, so the per-block metrics are the terms the loss adds up.
  for t in range(1, NUM_BLOCKS + 1):
    own_step, _ = _block_slices(grads["step"], t - 1)
    own_term, _ = _block_slices(grads[f"term/denoise_t{t}"], t - 1)
    _assert_close(
      own_step,
      [leaf / NUM_BLOCKS for leaf in own_term],
      f"the step's gradient in block {t} is not denoise_t{t}'s / T",
    )
  _assert_close(
    grads["step"]["classifier"],
    grads["term/ce"]["classifier"],
    "the step's classifier gradient is not CE's",
  )
  assert float(metrics["denoise"]) > 0


def test_dt_sampled_block_step_reaches_only_the_sampled_block():
  fn = _gradients("dt", "sampled", ("denoise",))
  seen = set()
  for seed in range(40):  # until every block has been the sampled one (t ~ U{1..T})
    metrics, grads = fn(jax.random.key(seed))
    t = int(metrics["block"])
    if t in seen:
      continue
    seen.add(t)
    _assert_term_is_local_to_block(grads["term/denoise"], t, f"sampled block {t}")
    _assert_inputs_independent_of(grads, ("blocks", "classifier"), f"sampled block {t}")
    # The whole step (CE + KL + D_t) changes block t and no other.
    own_step, others_step = _block_slices(grads["step"], t - 1)
    for leaf in others_step:
      assert np.all(leaf == 0.0), f"the step for sampled block {t} reaches another block"
    _assert_close(
      own_step,
      _block_slices(grads["term/denoise"], t - 1)[0],
      f"the step's gradient in sampled block {t} is not its denoise term's",
    )
    if len(seen) == NUM_BLOCKS:
      break
  assert seen == set(range(1, NUM_BLOCKS + 1)), seen


# -------------------------------------------------------------------------------------------- CT/FM
# Per term: (parts it must not reach, parts it must reach); paper Eq. 9 (CT), Eqs. 10-13 (FM).
CTFM_TERMS = {
  "ct": {
    "denoise": (("classifier",), ("net", "embed", "schedule")),
    "ce": (("net",), ("classifier",)),
    "kl": (("net", "classifier"), ("embed",)),
  },
  "fm": {"flow": (("classifier",), ("net", "embed")), "ce": ((), ("net", "classifier"))},
}


@pytest.mark.parametrize("variant", ["ct", "fm"])
def test_ctfm_no_forward_pass_crosses_times_and_terms_reach_what_the_paper_trains(variant):
  terms = CTFM_TERMS[variant]
  _, grads = _gradients(variant, "all", tuple(terms))(jax.random.key(1))
  _assert_inputs_independent_of(grads, ("net", "classifier"), variant)
  for name, (never, always) in terms.items():
    g = grads[f"term/{name}"]
    for part in never:
      assert not _nonzero(g[part]), f"{variant} {name} reaches params[{part!r}]"
    for part in always:
      assert _nonzero(g[part]), f"{variant} {name} gives params[{part!r}] nothing"
  # The loss is the plain sum of these terms: the metrics are what the step differentiates.
  total = jax.tree.map(lambda *g: sum(g), *(grads[f"term/{name}"] for name in terms))
  _assert_close(grads["step"], total, f"{variant}: the step's gradient is not the terms' sum")


# ---------------------------------------------------------------------------------- back-prop chain
def test_backprop_chain_does_carry_gradient_across_blocks():
  """The same probe on the back-prop baseline: the blocks' inputs depend on every block but the
  last, whose output goes to the classifier only."""
  _, grads = _gradients("backprop")(jax.random.key(1))
  leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(grads["calls"]["blocks"])]
  for s in range(1, NUM_BLOCKS + 1):
    reaches = any(np.any(leaf[s - 1] != 0) for leaf in leaves)
    assert reaches == (s < NUM_BLOCKS), f"the blocks' inputs depend on block {s}: {reaches}"
