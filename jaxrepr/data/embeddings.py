"""Embedding data with identity labels, for open-set enrollment (`jaxrepr.methods.enroll`).

The sources themselves (synthetic vMF identities, a user's `.npz` file, the embeddings files a
classifier run wrote; their specs and identity splits) live in jaxrepr/embedding_sources.py, which
the enrollment method imports too (it builds its episode table from the training source when it is
built, and a method never imports a data module); they are re-exported here under their usual
names (`embeddings.load_npz`, `embeddings.source_config`, ...).

`config.data` (name 'embeddings') holds the training source spec (`source_config`) plus the scenario
ranges of `jaxrepr.methods.enroll.episodes`; the host iterator only yields example ids (as
`jaxrepr.data.sets`), the episodes are drawn on device from (data seed, example id).
"""

from __future__ import annotations

import ml_collections

from jaxrepr.data import sets

# Re-exported: the sources, for configs, evaluators and users of this data module.
from jaxrepr.embedding_sources import (  # noqa: F401
  ENCODER_CONFIG,
  IDENTITIES,
  KINDS,
  SPLITS,
  Source,
  encoder_command,
  encoder_file,
  encoder_source,
  load_npz,
  make_source,
  select,
  source_config,
  split_identities,
  validate_source,
  vmf_mean_resultant_length,
  vmf_sample,
  vmf_source,
)

__all__ = [
  "ENCODER_CONFIG",
  "EVAL_ID_OFFSET",
  "IDENTITIES",
  "KINDS",
  "SPLITS",
  "Source",
  "default_config",
  "encoder_command",
  "encoder_file",
  "encoder_source",
  "load_npz",
  "make_source",
  "select",
  "source_config",
  "split_identities",
  "train_iterator",
  "validate_source",
  "vmf_mean_resultant_length",
  "vmf_sample",
  "vmf_source",
]

EVAL_ID_OFFSET = sets.EVAL_ID_OFFSET


def train_iterator(
  cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> sets.ExampleIdIterator:
  """Training episode ids and their seed (`cfg.seed`, or the run's `seed` when that is unset):
  episodes are drawn on device from the seed and these ids. The seed travels with the batch so
  that replicas of several seeds trained as one program (jaxrepr/replicas.py) each draw their own
  episodes."""
  generation_seed = cfg.get("seed")
  return sets.ExampleIdIterator(
    batch_size,
    shard_index=shard_index,
    shard_count=shard_count,
    generation_seed=seed if generation_seed is None else generation_seed,
  )


def default_config() -> ml_collections.ConfigDict:
  """`config.data` of an enrollment run: the training source and the episode settings
  (`jaxrepr.methods.enroll.episodes`)."""
  c = ml_collections.ConfigDict()
  c.name = "embeddings"
  c.seed = ml_collections.config_dict.placeholder(int)  # episode seed (default: config.seed)
  c.source = source_config("vmf")
  c.n_id_range = (5, 40)  # gallery identities per episode, inclusive
  c.walks_range = (1, 8)  # walks (samples) per gallery identity, inclusive
  c.context_size = 16  # K nearest gallery samples given to the model
  c.distance = "cosine"  # or 'l2'
  c.known_fraction = 0.5
  c.probe_groups = ()  # `group` values reserved for probes (empty: any held-out sample)
  return c
