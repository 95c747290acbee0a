"""The image strips (jaxrepr/data/image_strips.py) and the retrieval evaluator
(jaxrepr/evaluators/contrastive_retrieval.py): the strips tile the image, and top-1/top-5 equal a
numpy ranking of the same scores over all candidates of the split, padding excluded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrepr import config as config_lib, parallel
from jaxrepr.data import image_strips, images
from jaxrepr.evaluators import contrastive_retrieval
from tests.core.helpers import load_config


def test_strips_tile_the_image_and_keep_the_label():
  cfg = image_strips.default_config("mnist5k")
  strips, whole = image_strips.load(cfg, "test"), images.load(cfg, "test")
  assert [strips[s].shape[1] for s in image_strips.STRIPS] == [9, 10, 9]
  rebuilt = np.concatenate([strips[s] for s in image_strips.STRIPS], axis=1)
  np.testing.assert_array_equal(rebuilt, whole["image"])
  np.testing.assert_array_equal(strips["label"], whole["label"])
  assert image_strips.strip_bounds(8) == [(0, 2), (2, 6), (6, 8)]
  for name in ("contrastive_strips", "contrastive_xor"):
    for arg in (None, "tiny"):
      config_lib.validate(load_config(name, arg))


class _Projections:
  """A fixed random linear map of the top and bottom strips; the middle strip maps to the identity
  of the query combination (ones for Symile's product, zeros for the pairwise sum), so that the
  scores are <P top_i, P bottom_c>."""

  def __init__(self, objective):
    self.w = np.random.default_rng(0).normal(size=(28 * 9, 6)).astype(np.float32)
    self.middle = 1.0 if objective == "symile" else 0.0

  def reps(self, batch):
    out = {m: batch[m].reshape((batch[m].shape[0], -1)) @ self.w for m in batch if m != "middle"}
    if "middle" in batch:
      out["middle"] = jnp.full((batch["middle"].shape[0], 6), self.middle, jnp.float32)
    return out

  def predict(self, params, batch, rng):
    del params, rng
    return {"reps": self.reps(batch), "logit_scale": jnp.float32(3.0)}


@pytest.mark.parametrize("objective", ["symile", "clip"])
def test_retrieval_ranks_every_candidate_of_the_split(objective, monkeypatch):
  config = load_config("contrastive_strips", "clip" if objective == "clip" else None)
  real_load = image_strips.load

  def noisy_copy_load(cfg, split):  # bottom = top + noise: a retrieval with hits and misses
    out = dict(real_load(cfg, split))
    noise = np.random.default_rng(1).normal(size=out["top"].shape).astype(np.float32)
    out["bottom"] = out["top"] + 0.7 * noise
    # row 0 (which pads the last batch) a loud candidate: padding counted as candidates would
    # push it above the true candidate of many queries many times over
    out["bottom"][0] *= 3.0
    return out

  monkeypatch.setattr(image_strips, "load", noisy_copy_load)
  n = 130  # not a multiple of the batch: the padded rows must be neither queries nor candidates
  mesh = parallel.make_mesh(1)
  method = _Projections(objective)
  ev = contrastive_retrieval.Evaluator(
    config=config, method=method, mesh=mesh, workdir="", batch_size=50, max_rows=n
  )
  with jax.set_mesh(mesh):
    out = ev.run(None, jax.random.key(0), 0)
  data = {k: v[:n] for k, v in noisy_copy_load(config.data, "test").items() if k != "label"}
  r = {k: np.asarray(v, np.float64) for k, v in method.reps(data).items()}
  query = r["top"] * r["middle"] if objective == "symile" else r["top"] + r["middle"]
  scores = query @ r["bottom"].T
  above = (scores > np.diag(scores)[:, None]).sum(1)
  np.testing.assert_allclose(out["top1"], np.mean(above < 1), atol=1e-6)
  np.testing.assert_allclose(out["top5"], np.mean(above < 5), atol=1e-6)
  assert out["chance_top1"] == 1 / n
  assert 0 < out["top1"] < out["top5"] < 1, out  # a ranking with hits and misses
