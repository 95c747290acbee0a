"""`enroll`: open-set enrollment with a SetTransformer (Basoc, Cosma, Catruna, Radoi 2025, arXiv
2505.02815). A probe embedding and its K nearest gallery embeddings go into
a SetTransformer that outputs one logit of "known identity" (1) against "new identity" (0),
trained with binary cross-entropy on episodes drawn from an embedding source, with no threshold.
The training source (`config.data.source`) is read when the method is built, through
jaxrepr/embedding_sources.py (shared with the data module jaxrepr/data/embeddings.py).

Batches: `{'example_id': int32 (B,)}` from `jaxrepr.data.embeddings.train_iterator`, in which case
the episodes are drawn on device inside `loss`/`predict` from the training source (`config.data`,
see episodes.py for the keys: one device and eight give the same loss, a resumed run sees the same
episodes), or explicit episodes (the dict `episodes.generate` returns, from any source) as the
evaluator passes them.

`predict` returns {'logit': (B,)} and, for generated episodes, 'label'.
Model fields (`config.model`, `default_model_config`): input ('relational' dimension-free
features or 'raw' embeddings), probe ('concat' or 'extra'), scale ('none', 'context' or 'ratio';
see features.py), encoder ('sab' or 'isab'), num_blocks, dim_hidden, num_heads, num_inds, mode
('paper' or 'reference' attention).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxrepr import embedding_sources
from jaxrepr.methods.base import Batch, Method, Params, batch_generation_key, generation_key
from jaxrepr.methods.enroll import episodes, features
from jaxrepr.methods.enroll.model import ENCODERS, EnrollTransformer
from jaxrepr.nn.set_attention import MODES
from jaxrepr.errors import ConfigError


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      input="relational",
      probe="concat",
      scale="ratio",
      encoder="sab",
      num_blocks=2,
      dim_hidden=64,
      num_heads=4,
      num_inds=8,
      mode="paper",
    )
  )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad config.model / config.data field."""
  m, d = config.model, config.data
  for field, value, choices in (
    ("input", m.input, features.INPUTS),
    ("probe", m.probe, features.PROBES),
    ("scale", m.scale, features.SCALES),
    ("encoder", m.encoder, ENCODERS),
    ("mode", m.mode, MODES),
  ):
    if value not in choices:
      raise ConfigError(f"config.model.{field}={value!r} must be one of {choices}")
  if m.dim_hidden % m.num_heads:
    raise ConfigError(
      f"config.model.dim_hidden={m.dim_hidden} must divide by config.model.num_heads={m.num_heads}"
    )
  if d.get("name") != "embeddings":
    raise ConfigError(
      f"the enroll method trains on config.data.name='embeddings', got {d.get('name')!r}"
    )
  try:
    episodes.scenario_from_config(d)
  except ValueError as e:
    raise ConfigError(f"config.data: {e}") from e
  embedding_sources.validate_source(d.source, "config.data.source")


def set_elements_fn(config: ml_collections.ConfigDict):
  m = config.model
  return functools.partial(features.set_elements, input=m.input, probe=m.probe, scale=m.scale)


def build(config: ml_collections.ConfigDict) -> Method:
  validate(config)
  m, d = config.model, config.data
  scenario = episodes.scenario_from_config(d)
  source = embedding_sources.make_source(d.source)
  host_table = episodes.make_table(source, tuple(d.probe_groups))
  episodes.check_pool(host_table, scenario, "config.data.source")
  table = episodes.device_table(host_table)
  dim = int(source["embeddings"].shape[1])
  root = generation_key(config)
  model = EnrollTransformer(
    dim_hidden=m.dim_hidden,
    num_heads=m.num_heads,
    num_blocks=m.num_blocks,
    encoder=m.encoder,
    num_inds=m.num_inds,
    mode=m.mode,
  )
  elements = set_elements_fn(config)

  def materialize(batch: Batch) -> dict[str, jax.Array]:
    if "ctx_dist" in batch:
      return dict(batch)
    if "example_id" not in batch:
      raise ValueError(
        f"enroll batches need 'example_id' or explicit episodes; got {sorted(batch)}"
      )
    key = batch_generation_key(batch, root)  # the batch's own seed: replicas differ
    return episodes.generate(table, key, batch["example_id"], scenario)

  def logits(params: Params, ep: dict[str, jax.Array]) -> jax.Array:
    if m.input == "raw" and ep["probe"].shape[-1] != dim:
      raise ConfigError(
        f"config.model.input='raw' takes {dim}-d embeddings (the training source); "
        f"got {ep['probe'].shape[-1]}-d: use input='relational' across dimensions"
      )
    x_BxNxF, mask_BxN = elements(ep)
    return model.apply(params, x_BxNxF, mask_BxN)

  # Jitted, as the trainer calls it: called eagerly, drawing the episode and initialising the
  # model op by op would compile each of a few hundred small operations on its own.
  @jax.jit
  def init(rng: jax.Array, batch: Batch) -> Params:
    del batch  # shapes come from the config and the training source
    ep = episodes.generate(table, root, jnp.zeros((1,), jnp.int32), scenario)
    return model.init(rng, *elements(ep))

  def loss(params: Params, batch: Batch, rng: jax.Array):
    del rng  # no stochastic layers; episodes come from the example ids (module docstring)
    ep = materialize(batch)
    logit_B = logits(params, ep)
    y_B = ep["label"].astype(jnp.float32)
    value = jnp.mean(optax.sigmoid_binary_cross_entropy(logit_B, y_B))
    accuracy = jnp.mean(((logit_B > 0) == (ep["label"] == 1)).astype(jnp.float32))
    return value, {"accuracy": accuracy, "known_fraction": jnp.mean(y_B)}

  def predict(params: Params, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    del rng
    ep = materialize(batch)
    out = {"logit": logits(params, ep)}
    if "label" in ep:
      out["label"] = ep["label"]
    return out

  note = (
    f"SetTransformer enrollment ({m.input} input, probe {m.probe}); training source "
    f"{d.source.kind} with {episodes.num_identities(host_table)} identities, d={dim}"
  )
  return Method(init=init, loss=loss, predict=predict, param_count_note=note)
