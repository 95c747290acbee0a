"""Three modalities cut from real images: the top, middle and bottom horizontal strips of each image
of an image set of jaxrepr/data/images.py (embedded MNIST-5k digits by default), with the label.

Batches: {'top', 'middle', 'bottom': float32 (B, h_k, W, C), 'label': int32 (B,)}; for 28-row
images the strips hold rows 0-8, 9-18 and 19-27 (`strip_bounds`). `config.data` is the image
set's config (images.default_config) with `name = 'image_strips'`, so every field of the image
set (dataset, data_dir, test_fraction, split_seed, normalize) applies; augmentation is not used.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np

from jaxrepr.data import images, pipeline
from jaxrepr.errors import ConfigError

STRIPS = ("top", "middle", "bottom")


def default_config(dataset: str = "mnist5k") -> ml_collections.ConfigDict:
  cfg = images.default_config(dataset)
  cfg.name = "image_strips"
  return cfg


def strip_bounds(height: int) -> list[tuple[int, int]]:
  """Row ranges of the three strips: as equal as the height allows, the middle one the widest."""
  if height < 3:
    raise ConfigError(f"images of height {height} cannot be cut into three strips")
  edge = height // 3
  return [(0, edge), (edge, height - edge), (height - edge, height)]


def load(cfg: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  if cfg.augment != "none" or cfg.class_prototypes:
    raise ConfigError("config.data.augment / class_prototypes are not used by image_strips")
  data = images.load(cfg, split)
  image = data["image"]
  out = {
    name: np.ascontiguousarray(image[:, lo:hi])
    for name, (lo, hi) in zip(STRIPS, strip_bounds(image.shape[1]))
  }
  out["label"] = data["label"]
  return out


def train_iterator(
  cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
):
  return pipeline.ArrayIterator(
    load(cfg, "train"), batch_size, seed=seed, shard_index=shard_index, shard_count=shard_count
  )


def eval_arrays(cfg: ml_collections.ConfigDict, split: str = "test") -> Mapping[str, np.ndarray]:
  return load(cfg, split)
