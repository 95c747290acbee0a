"""Tests of the set-task method: parameter counts, the MoG likelihood against scipy, the oracle's
scale, the generators and iterator, device-count independence, shapes, errors, and a short fit."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy import stats
from scipy.special import logsumexp

from jaxrepr.data import sets
from jaxrepr.methods import set_tasks
from jaxrepr.methods.base import generation_key
from jaxrepr.methods.set_tasks import generate
from jaxrepr.methods.set_tasks import loss as loss_lib


def _config(task, **model):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = sets.default_config(task)
  c.model = set_tasks.default_model_config(task)
  c.model.update(model)
  return c


def _tiny(task, **model):
  c = (
    _config(task, dim_hidden=8, num_heads=2, num_inds=4, **model)
    if task == "mog"
    else _config(task, dim_hidden=8, num_heads=2, **model)
  )
  if task == "mog":
    c.data.min_size, c.data.max_size = 5, 12
  return c


def _count(params):
  return sum(a.size for a in jax.tree.leaves(params))


def _ids(n, offset=0):
  return {"example_id": jnp.arange(offset, offset + n, dtype=jnp.int32)}


@pytest.mark.parametrize(
  "task,ln,want", [("mog", None, 423_172), ("mog", True, 426_756), ("max", None, 37_953)]
)
def test_reference_parameter_counts(task, ln, want):
  m = set_tasks.build(_config(task, ln=ln))
  shapes = jax.eval_shape(m.init, jax.random.key(0), _ids(2))
  assert _count(shapes) == want


def test_mog_log_likelihood_matches_scipy():
  rng = np.random.default_rng(0)
  b, n, k, d = 2, 6, 3, 2
  x = rng.normal(size=(b, n, d)).astype(np.float32)
  pi = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
  mu = rng.normal(size=(b, k, d)).astype(np.float32)
  sigma = rng.uniform(0.3, 2.0, size=(b, k, d)).astype(np.float32)
  got = loss_lib.mog_log_likelihood(
    jnp.asarray(x), jnp.asarray(pi), jnp.asarray(mu), jnp.asarray(sigma), pi_eps=0.0
  )
  want = np.zeros((b, n))
  for i in range(b):
    comp = np.stack(
      [
        np.log(pi[i, j])
        + stats.multivariate_normal(mu[i, j], np.diag(sigma[i, j] ** 2)).logpdf(x[i])
        for j in range(k)
      ],
      -1,
    )
    want[i] = logsumexp(comp, axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  mask = jnp.arange(n)[None, :] < jnp.array([6, 2])[:, None]
  np.testing.assert_allclose(
    loss_lib.masked_mean(got, mask), np.concatenate([want[0], want[1, :2]]).mean(), rtol=1e-5
  )


def test_head_and_em_step():
  raw = jax.random.normal(jax.random.key(0), (3, 4, 4))
  head = loss_lib.mog_head(raw, 2, "isotropic")
  np.testing.assert_allclose(head["pi"].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(head["sigma"][..., 0], head["sigma"][..., 1])
  with pytest.raises(ValueError, match="outputs per cluster"):
    loss_lib.mog_head(raw, 2, "diagonal")
  # EM never lowers the likelihood: LL1 >= LL0 from any start
  x = jax.random.normal(jax.random.key(1), (3, 12, 2)) * 2.0
  data = {"x": x, "mask": jnp.arange(12)[None, :] < jnp.array([12, 7, 3])[:, None]}
  ll = lambda p: loss_lib.per_set_mean(
    loss_lib.mog_log_likelihood(data["x"], p["pi"], p["mu"], p["sigma"], 0.0), data["mask"]
  )
  new = loss_lib.em_step(data["x"], data["mask"], head["pi"], head["mu"], head["sigma"], True)
  assert np.all(ll(new) > ll(head) - 1e-4)


def test_oracle_log_likelihood_is_paper_scale():
  """Paper Table 3: oracle -1.4726 per point; the reference generator gives about -1.47 to -1.48."""
  c = _config("mog")
  data = jax.jit(lambda ids: generate.generate(c.data, generation_key(c), ids))(
    jnp.arange(400, dtype=jnp.int32)
  )
  ll = loss_lib.mog_log_likelihood(data["x"], data["pi"], data["mu"], data["sigma"], 0.0)
  oracle = float(loss_lib.masked_mean(ll, data["mask"]))
  assert -1.51 < oracle < -1.44, oracle


def _generator(cfg):
  return jax.jit(lambda k, i: generate.generate(cfg, k, i))


def test_generators_and_sizes():
  c = _config("mog")
  ids = jnp.arange(20, 30, dtype=jnp.int32)
  d = _generator(c.data)(jax.random.key(0), ids)
  chex.assert_shape(
    [d["x"], d["mask"], d["mu"], d["pi"]], [(10, 599, 2), (10, 599), (10, 4, 2), (10, 4)]
  )
  sizes = np.asarray(d["mask"].sum(1))
  assert len(set(sizes)) == 1 and 300 <= sizes[0] <= 599  # size_per='batch': one n per batch
  assert np.all(np.asarray(d["x"])[~np.asarray(d["mask"])] == 0)
  c.data.size_per = "example"
  gen = _generator(c.data)
  d2 = gen(jax.random.key(0), ids)
  assert len(set(np.asarray(d2["mask"].sum(1)))) > 1
  backwards = gen(jax.random.key(0), ids[::-1])  # a set depends on its id, not its row
  np.testing.assert_array_equal(backwards["x"][::-1], d2["x"])
  m = _generator(sets.default_config("max"))(jax.random.key(0), jnp.arange(256))
  x, mask = np.asarray(m["x"][..., 0]), np.asarray(m["mask"])
  np.testing.assert_array_equal(m["y"], np.where(mask, x, -np.inf).max(1))
  assert set(mask.sum(1)) == set(range(1, 11)) and x.max() <= 100.0


def test_iterator_shards_and_resumes():
  cfg = sets.default_config("mog")
  full = sets.train_iterator(cfg, batch_size=8, seed=0)
  next(full)
  np.testing.assert_array_equal(next(full)["example_id"], np.arange(8, 16))
  shards = [
    sets.train_iterator(cfg, batch_size=8, seed=0, shard_index=i, shard_count=2) for i in range(2)
  ]
  np.testing.assert_array_equal(
    np.concatenate([next(s)["example_id"] for s in shards]), np.arange(8)
  )
  state = full.get_state()
  after = next(full)["example_id"]
  resumed = sets.train_iterator(cfg, batch_size=8, seed=0)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["example_id"], after)
  assert (
    next(iter(sets.eval_batches(cfg, num_batches=1, batch_size=8)))["example_id"][0]
    == sets.EVAL_ID_OFFSET
  )


def _bucketed_and_padded(num_buckets):
  c = _tiny("mog")
  c.data.min_size, c.data.max_size = 5, 30  # one set size per batch: 5, 14, 18, 26 below
  c.model.length_buckets = num_buckets
  bucketed = set_tasks.build(c)
  c.model.length_buckets = 1
  padded = set_tasks.build(c)
  return c, bucketed, padded, padded.init(jax.random.key(0), None)


def test_length_buckets_change_no_loss_or_gradient():
  """Cutting padded sets to a bucket length (lengths 17 and 30 here) gives the padded numbers."""
  c, bucketed, padded, params = _bucketed_and_padded(2)
  grad_b, grad_p = (jax.jit(jax.value_and_grad(m.loss, has_aux=True)) for m in (bucketed, padded))
  for batch in (_ids(4), _ids(4, 400)):  # sizes 14 and 26: one batch per bucket
    (loss_b, _), grads_b = grad_b(params, batch, jax.random.key(1))
    (loss_p, _), grads_p = grad_p(params, batch, jax.random.key(1))
    np.testing.assert_allclose(loss_b, loss_p, rtol=1e-5)
    jax.tree.map(
      lambda b, p: np.testing.assert_allclose(b, p, rtol=1e-4, atol=1e-6), grads_b, grads_p
    )


@pytest.mark.heavy
def test_length_buckets_change_no_prediction_and_keep_masks_with_gaps():
  c, bucketed, padded, params = _bucketed_and_padded(4)  # lengths 11, 17, 24, 30: all used below
  predict_b, predict_p = jax.jit(bucketed.predict), jax.jit(padded.predict)
  for batch in (_ids(4, 8), _ids(4), _ids(4, 40), _ids(4, 400)):
    jax.tree.map(
      lambda b, p: np.testing.assert_allclose(b, p, rtol=1e-5, atol=1e-6),
      predict_b(params, batch, jax.random.key(1)),
      predict_p(params, batch, jax.random.key(1)),
    )
  # a user's sets whose masks have gaps: the cut keeps every valid element (here up to index 19)
  x = jax.random.normal(jax.random.key(3), (2, 30, 2))
  mask = (jnp.arange(30)[None, :] < 20) & (jnp.arange(30)[None, :] % 3 != 1)
  user = {"x": x, "mask": jnp.broadcast_to(mask, (2, 30))}
  np.testing.assert_allclose(
    bucketed.loss(params, user, jax.random.key(1))[0],
    padded.loss(params, user, jax.random.key(1))[0],
    rtol=1e-5,
  )


def test_eight_devices_give_the_one_device_loss():
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  c = _tiny("max")
  c.data.size_per = "batch"  # also exercises the per-batch size on a sharded id array
  m = set_tasks.build(c)
  params = m.init(jax.random.key(0), None)
  batch = _ids(8, 16)
  loss_one = jax.jit(m.loss)(params, batch, jax.random.key(1))[0]
  mesh = jax.make_mesh((8,), ("data",))
  with jax.set_mesh(mesh):  # as the trainer runs its step
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    loss_eight = jax.jit(m.loss)(params, sharded, jax.random.key(1))[0]
  np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-5)


@pytest.mark.heavy
class MethodVariantsTest(parameterized.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(("mog", "set_transformer", "paper"), ("max", "deepsets", "reference"))
  def test_loss_and_predict(self, task, arch, mode):
    c = _tiny(task, arch=arch, mode=mode)
    m = set_tasks.build(c)
    params = m.init(jax.random.key(0), None)
    # explicit padded sets (a user's data); generated sets are covered by the tests below
    n_max, d = c.data.max_size, (2 if task == "mog" else 1)
    batch = {
      "x": jax.random.uniform(jax.random.key(2), (4, n_max, d)),
      "mask": jnp.arange(n_max)[None, :] < jnp.array([n_max, 5, 3, 1])[:, None],
    }
    if task == "max":
      batch["y"] = jnp.max(jnp.where(batch["mask"], batch["x"][..., 0], -jnp.inf), axis=1)
    loss, metrics = self.variant(m.loss)(params, batch, jax.random.key(1))
    chex.assert_shape(loss, ())
    chex.assert_tree_all_finite((loss, metrics))
    pred = self.variant(m.predict)(params, batch, jax.random.key(1))
    if task == "mog":
      chex.assert_shape(
        [pred["pi"], pred["mu"], pred["sigma"], pred["ll"], pred["ll1"]],
        [(4, 4), (4, 4, 2), (4, 4, 2), (4,), (4,)],
      )
      np.testing.assert_allclose(-loss, metrics["ll_per_point"])
    else:
      chex.assert_shape([pred["max"], pred["abs_error"]], [(4,), (4,)])
      np.testing.assert_allclose(loss, pred["abs_error"].mean(), rtol=1e-5)
    chex.assert_tree_all_finite(pred)


def test_clear_errors():
  with pytest.raises(ValueError, match="config.model.arch"):
    set_tasks.build(_config("mog", arch="transformer"))
  with pytest.raises(ValueError, match="MoG head"):
    set_tasks.build(_config("mog", head="full"))
  bad = _config("max")
  bad.data.min_size = 0
  with pytest.raises(ValueError, match="min_size"):
    set_tasks.build(bad)
  m = set_tasks.build(_tiny("max"))
  with pytest.raises(ValueError, match="example_id"):
    m.loss(m.init(jax.random.key(0), None), {"points": jnp.zeros((2, 3))}, jax.random.key(0))


@pytest.mark.heavy
def test_short_fit_beats_predicting_the_mean():
  c = _config("max", dim_hidden=16, num_heads=2)
  m = set_tasks.build(c)
  params = m.init(jax.random.key(0), None)
  opt = optax.adam(1e-2)
  opt_state = opt.init(params)
  batch_size = 32

  @jax.jit
  def step(params, opt_state, k):
    ids = {"example_id": k * batch_size + jnp.arange(batch_size, dtype=jnp.int32)}
    grads = jax.grad(lambda p: m.loss(p, ids, jax.random.key(0))[0])(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for k in range(200):
    params, opt_state = step(params, opt_state, k)
  ev = _ids(512, sets.EVAL_ID_OFFSET)
  mae = float(jax.jit(m.predict)(params, ev, jax.random.key(0))["abs_error"].mean())
  y = generate.generate(c.data, generation_key(c), ev["example_id"])["y"]
  mean_mae = float(jnp.abs(y - y.mean()).mean())
  assert mae < 0.4 * mean_mae, (mae, mean_mae)
