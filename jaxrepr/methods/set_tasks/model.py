"""Models of the Set Transformer paper's set tasks (Lee et al., ICML 2019), as Flax Linen modules.

* `MoGClusterer`, amortized clustering (paper §5.3). The reference code (run.py) uses
  ISAB(2->128, 4 heads, 32 inducing) -> ISAB(128) -> PMA(k=4) -> SAB -> SAB -> Linear(128 -> 4):
  423,172 parameters in reference mode, 426,756 with LayerNorm on. The paper's decoder (supp.
  Table 4) has one SAB after PMA and 1 + 2*2 outputs per cluster: `num_decoder_sabs=1`,
  `head='diagonal'`. `encoder='sab'` gives the SAB x2 encoder of Table 3.
* `MaxRegressor`, max regression (paper §5.1, Table 1 "SAB+PMA"; the notebook's
  SmallSetTransformer):
  SAB(1->64, 4 heads) -> SAB(64) -> PMA(64, k=1) -> Linear(64 -> 1): 37,953 parameters.
* `DeepSets`, the rFF + pooling baseline of Table 1 as in the notebook: 4 Linear(64) layers with
  ReLU between them, masked max/mean/sum pooling, Linear(64) -> ReLU -> Linear(out).

All take zero-padded sets x (B, n_max, d) and a boolean mask (B, n_max); padding changes nothing.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrepr.nn.set_attention import ENCODERS, PMA, SAB, Linear, set_encoder  # noqa: F401

POOLINGS = ("max", "mean", "sum")


class MoGClusterer(nn.Module):
  """Set -> raw per-cluster outputs (B, num_components, out_per_component); see loss.mog_head."""

  num_components: int = 4
  out_per_component: int = 4  # isotropic head for 2-D data: pi logit, mu (2), sigma (1)
  dim_hidden: int = 128
  num_heads: int = 4
  num_inds: int = 32
  encoder: str = "isab"
  num_decoder_sabs: int = 2
  mode: str = "reference"
  ln: bool | None = None
  pma_rff: bool | None = None
  torch_init: bool | None = None

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array, mask_BxN: jax.Array | None = None) -> jax.Array:
    common = dict(num_heads=self.num_heads, mode=self.mode, ln=self.ln, torch_init=self.torch_init)
    h_BxNxH = set_encoder(
      x_BxNxD,
      mask_BxN,
      encoder=self.encoder,
      num_blocks=2,
      dim_hidden=self.dim_hidden,
      num_inds=self.num_inds,
      **common,
    )
    z_BxKxH = PMA(
      self.dim_hidden, num_seeds=self.num_components, rff=self.pma_rff, name="pma", **common
    )(h_BxNxH, mask_BxN)
    for i in range(self.num_decoder_sabs):
      z_BxKxH = SAB(self.dim_hidden, name=f"dec_{i}", **common)(z_BxKxH)
    return Linear(self.out_per_component, torch_init=self._torch_init(), name="out")(z_BxKxH)

  def _torch_init(self) -> bool:
    return self.mode == "reference" if self.torch_init is None else self.torch_init


class MaxRegressor(nn.Module):
  """SAB x num_sabs -> PMA(k=1) -> Linear(1): predicted maximum, shape (B,)."""

  dim_hidden: int = 64
  num_heads: int = 4
  num_sabs: int = 2
  mode: str = "reference"
  ln: bool | None = None
  pma_rff: bool | None = None
  torch_init: bool | None = None

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array, mask_BxN: jax.Array | None = None) -> jax.Array:
    common = dict(num_heads=self.num_heads, mode=self.mode, ln=self.ln, torch_init=self.torch_init)
    h_BxNxH = x_BxNxD
    for i in range(self.num_sabs):
      h_BxNxH = SAB(self.dim_hidden, name=f"enc_{i}", **common)(h_BxNxH, mask_BxN)
    z_Bx1xH = PMA(self.dim_hidden, num_seeds=1, rff=self.pma_rff, name="pma", **common)(
      h_BxNxH, mask_BxN
    )
    torch_init = self.mode == "reference" if self.torch_init is None else self.torch_init
    y_Bx1x1 = Linear(1, torch_init=torch_init, name="out")(z_Bx1xH)
    return y_Bx1x1[:, 0, 0]


def masked_pool(h_BxNxH: jax.Array, mask_BxN: jax.Array | None, pooling: str) -> jax.Array:
  """Max / mean / sum over the valid elements of each set -> (B, H)."""
  if pooling not in POOLINGS:
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
  if mask_BxN is None:
    mask_BxN = jnp.ones(h_BxNxH.shape[:2], bool)
  m_BxNx1 = mask_BxN.astype(bool)[:, :, None]
  if pooling == "max":
    return jnp.max(jnp.where(m_BxNx1, h_BxNxH, -jnp.inf), axis=1)
  total_BxH = jnp.sum(jnp.where(m_BxNx1, h_BxNxH, 0.0), axis=1)
  if pooling == "sum":
    return total_BxH
  count_Bx1 = jnp.maximum(jnp.sum(m_BxNx1, axis=1), 1).astype(h_BxNxH.dtype)
  return total_BxH / count_Bx1


class DeepSets(nn.Module):
  """rFF + pooling (Zaheer et al. 2017; paper Table 1 baseline): output (B, dim_output)."""

  dim_hidden: int = 64
  num_phi_layers: int = 4
  pooling: str = "max"
  dim_output: int = 1
  torch_init: bool = True

  @nn.compact
  def __call__(self, x_BxNxD: jax.Array, mask_BxN: jax.Array | None = None) -> jax.Array:
    h_BxNxH = x_BxNxD
    for i in range(self.num_phi_layers):
      if i:
        h_BxNxH = nn.relu(h_BxNxH)
      h_BxNxH = Linear(self.dim_hidden, torch_init=self.torch_init, name=f"phi_{i}")(h_BxNxH)
    pooled_Bx1xH = masked_pool(h_BxNxH, mask_BxN, self.pooling)[:, None, :]
    r_Bx1xH = nn.relu(
      Linear(self.dim_hidden, torch_init=self.torch_init, name="rho_0")(pooled_Bx1xH)
    )
    return Linear(self.dim_output, torch_init=self.torch_init, name="rho_1")(r_Bx1xH)[:, 0, :]
