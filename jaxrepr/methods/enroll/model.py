"""The enrollment SetTransformer: set elements -> SAB/ISAB encoder -> PMA(k=1) -> Linear -> 1 logit.

The elements come from `features.set_elements` (the probe concatenated into each context element,
or as one more flagged element). The blocks are jaxrepr.nn.set_attention's, with their masks, so
the logit is invariant to the order of the elements and padded elements change nothing.
"""

from __future__ import annotations


import flax.linen as nn
import jax

from jaxrepr.nn.set_attention import ENCODERS, PMA, Linear, set_encoder  # noqa: F401


class EnrollTransformer(nn.Module):
  """(B, N, F) elements and a (B, N) mask -> (B,) logit of "known identity"."""

  dim_hidden: int = 64
  num_heads: int = 4
  num_blocks: int = 2
  encoder: str = "sab"
  num_inds: int = 8
  mode: str = "paper"
  ln: bool | None = None
  pma_rff: bool | None = None

  @nn.compact
  def __call__(self, x_BxNxF: jax.Array, mask_BxN: jax.Array) -> jax.Array:
    common = dict(num_heads=self.num_heads, mode=self.mode, ln=self.ln)
    h_BxNxH = set_encoder(
      x_BxNxF,
      mask_BxN,
      encoder=self.encoder,
      num_blocks=self.num_blocks,
      dim_hidden=self.dim_hidden,
      num_inds=self.num_inds,
      **common,
    )
    z_Bx1xH = PMA(self.dim_hidden, num_seeds=1, rff=self.pma_rff, name="pma", **common)(
      h_BxNxH, mask_BxN
    )
    if self.mode == "paper":  # the paper-mode blocks are pre-LN: normalise the pooled output
      z_Bx1xH = nn.LayerNorm(name="ln_out")(z_Bx1xH)
    logit_Bx1x1 = Linear(1, torch_init=self.mode == "reference", name="out")(z_Bx1xH)
    return logit_Bx1x1[:, 0, 0]
