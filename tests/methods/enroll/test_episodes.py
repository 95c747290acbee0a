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
