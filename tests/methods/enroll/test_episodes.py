"""The scenario generator: who may be a probe, what the context holds, keys and resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr.data import embeddings
from jaxrepr.methods.enroll import episodes


def _source(num_ids=30, per_id=6, dim=8, seed=0, **kw):
  return embeddings.vmf_source(dim, 20.0, num_ids, per_id, seed, **kw)


def _generate(src, scenario, ids, n_id=None, walks=None, probe_groups=()):
  table = episodes.device_table(episodes.make_table(src, probe_groups))
  fn = jax.jit(lambda t, i, n, w: episodes.generate(t, jax.random.key(3), i, scenario, n, w))
  return jax.tree.map(np.asarray, fn(table, jnp.asarray(ids, jnp.int32), n_id, walks))


def _np_dist(p, g, kind):
  if kind == "cosine":
    return 1.0 - (g / np.linalg.norm(g, axis=-1, keepdims=True)) @ (p / np.linalg.norm(p))
  return np.linalg.norm(g - p, axis=-1)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_probes_galleries_and_contexts_follow_the_protocol(distance):
  src = _source()
  # uneven identities: identity 0 keeps 2 samples, identity 1 only 1 (dropped: no held-out probe)
  keep = ~(
    ((src["labels"] == 0) & (np.arange(len(src["labels"])) % 6 >= 2))
    | ((src["labels"] == 1) & (np.arange(len(src["labels"])) % 6 >= 1))
  )
  src = {k: v[keep] for k, v in src.items()}
  assert int(episodes.make_table(src)["num_dropped"]) == 1
  scn = episodes.Scenario(
    n_id_range=(2, 12), walks_range=(1, 6), context_size=10, distance=distance
  )
  ep = _generate(src, scn, np.arange(300))
  x, lab = src["embeddings"], src["labels"]
  seen_known = seen_new = 0
  for b in range(300):
    gal = ep["gallery_index"][b][ep["gallery_index"][b] >= 0]
    gal_ids = set(lab[gal])
    assert len(gal_ids) == ep["n_id"][b] and 1 not in gal_ids
    for i in gal_ids:  # min(walks, samples - 1) walks: one sample always held out
      assert np.sum(lab[gal] == i) == min(ep["walks"][b], np.sum(lab == i) - 1)
    p = ep["probe_index"][b]
    assert p not in gal  # the probe sample is never enrolled
    if ep["label"][b] == 1:
      assert lab[p] in gal_ids
      seen_known += 1
    else:
      assert lab[p] not in gal_ids
      seen_new += 1
    # the context is the K nearest gallery samples, sorted, with their gallery identity slots
    d = _np_dist(x[p], x[gal], distance)
    k = min(10, len(gal))
    m = ep["ctx_mask"][b]
    assert m.sum() == k and m[:k].all()
    np.testing.assert_allclose(ep["ctx_dist"][b][:k], np.sort(d)[:k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ep["probe"][b]), x[p])
    ctx_rows = ep["ctx_emb"][b][:k]
    same = ep["ctx_label"][b][:k][:, None] == ep["ctx_label"][b][:k][None, :]
    ctx_src = np.array([gal[np.argmin(np.abs(x[gal] - r).sum(1))] for r in ctx_rows])
    np.testing.assert_array_equal(same, lab[ctx_src][:, None] == lab[ctx_src][None, :])
    np.testing.assert_allclose(
      ep["ctx_pair"][b][:k, :k],
      np.array([_np_dist(r, ctx_rows, distance) for r in ctx_rows]) * (1 - np.eye(k)),
      atol=1e-4,
    )
    assert ep["gallery_size"][b] == len(gal)
  assert 100 < seen_known < 200 and seen_new > 100
  assert len(set(ep["n_id"])) > 5 and set(ep["walks"]) == set(range(1, 7))


def test_probe_groups_keep_probes_out_of_the_gallery_conditions():
  src = _source(num_ids=20, per_id=6)
  src["group"] = (np.arange(len(src["labels"])) % 6 >= 4).astype(np.int32)  # 2 probe walks each
  scn = episodes.Scenario(n_id_range=(3, 8), walks_range=(1, 6), context_size=6)
  ep = _generate(src, scn, np.arange(200), probe_groups=(1,))
  for b in range(200):
    gal = ep["gallery_index"][b][ep["gallery_index"][b] >= 0]
    assert np.all(src["group"][gal] == 0)
    assert src["group"][ep["probe_index"][b]] == 1
    # all four non-probe walks can be enrolled: nothing needs holding out
    for i in set(src["labels"][gal]):
      assert np.sum(src["labels"][gal] == i) == min(ep["walks"][b], 4)
  with pytest.raises(ValueError, match="group"):
    episodes.make_table(_source(), probe_groups=(1,))


def test_given_scenarios_small_galleries_and_padding():
  src = _source(num_ids=12, per_id=3)
  scn = episodes.Scenario(n_id_range=(2, 3), walks_range=(1, 4), context_size=8)
  ep = _generate(
    src, scn, np.arange(6), jnp.array([2, 3, 2, 3, 2, 3]), jnp.array([1, 1, 4, 4, 2, 2])
  )
  np.testing.assert_array_equal(ep["n_id"], [2, 3, 2, 3, 2, 3])
  # 3 samples per identity: at most 2 walks each; galleries of 2..6 samples, K = 8 padded
  np.testing.assert_array_equal(ep["gallery_size"], [2, 3, 4, 6, 4, 6])
  np.testing.assert_array_equal(ep["ctx_mask"].sum(1), ep["gallery_size"])
  pad = ~ep["ctx_mask"]
  assert np.all(ep["ctx_label"][pad] == -1) and np.all(ep["ctx_dist"][pad] == 0)
  with pytest.raises(ValueError, match="more than that many"):
    episodes.check_pool(episodes.make_table(src), episodes.Scenario(n_id_range=(2, 12)), "f")
  with pytest.raises(ValueError, match="1 <= min <= max"):
    episodes.Scenario(n_id_range=(5, 2))
  with pytest.raises(ValueError, match="distance"):
    episodes.Scenario(distance="dot")


def test_episodes_depend_on_the_example_id_only():
  src = _source()
  scn = episodes.Scenario(n_id_range=(2, 10), walks_range=(1, 5), context_size=6)
  ids = np.arange(40, 56)
  a = _generate(src, scn, ids)
  b = _generate(src, scn, ids[::-1])
  for k in a:
    np.testing.assert_array_equal(a[k], b[k][::-1])
  it = embeddings.train_iterator(embeddings.default_config(), batch_size=8, seed=0)
  next(it)
  state = it.get_state()
  want = next(it)["example_id"]
  resumed = embeddings.train_iterator(embeddings.default_config(), batch_size=8, seed=0)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["example_id"], want)


def test_a_per_episode_known_fraction_redraws_only_the_label_and_matches_the_static_prior():
  """The evaluator's prior sweep passes the known fraction per episode (traced); at the scenario's
  own prior that must give exactly the episodes training draws, and across priors the same draws
  (paired: known at p implies known at any larger p; galleries unchanged)."""
  src = _source()
  scn = episodes.Scenario(n_id_range=(2, 8), walks_range=(1, 3), context_size=6)
  table = episodes.device_table(episodes.make_table(src))
  ids = jnp.arange(400, dtype=jnp.int32)
  gen = jax.jit(lambda p: episodes.generate(table, jax.random.key(3), ids, scn, known_B=p))
  static = jax.tree.map(np.asarray, episodes.generate(table, jax.random.key(3), ids, scn))
  at = {p: jax.tree.map(np.asarray, gen(jnp.full((400,), p))) for p in (0.1, 0.5, 0.9)}
  for k in static:
    np.testing.assert_array_equal(at[0.5][k], static[k], err_msg=k)
  for k in ("gallery_index", "n_id", "walks"):
    np.testing.assert_array_equal(at[0.1][k], at[0.9][k])
  assert np.all(at[0.1]["label"] <= at[0.5]["label"]) and np.all(
    at[0.5]["label"] <= at[0.9]["label"]
  )
  for p, ep in at.items():  # 400 draws: 4 standard deviations at most 0.1
    assert abs(ep["label"].mean() - p) < 0.1, (p, ep["label"].mean())
  # a known probe is a held-out sample of a gallery identity at every prior
  lab = src["labels"]
  for b in np.flatnonzero(at[0.9]["label"] == 1)[:50]:
    gal = at[0.9]["gallery_index"][b][at[0.9]["gallery_index"][b] >= 0]
    assert lab[at[0.9]["probe_index"][b]] in set(lab[gal])
