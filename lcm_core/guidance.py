"""The guidance-scale embedding of LCM-distilled UNets (w-conditioning).

Luo et al. 2023, "Latent Consistency Models", Sec. 4.2: the consistency model is distilled
with the CFG scale w as an extra input, so one pass gives the guided result with no CFG
pass. The full LCM checkpoints (LCM_Dreamshaper_v7, lcm-sdxl, lcm-ssd-1b) feed w through a
sinusoidal embedding of 1000 * w (the VDM timestep embedding, Kingma et al. 2021) and a
bias-free Linear ``cond_proj`` whose output is added to the sinusoidal timestep embedding
before the time MLP (diffusers ``TimestepEmbedding(cond_proj_dim=...)``).

Two conventions name w:
- diffusers' ``LatentConsistencyModelPipeline`` takes ``guidance_scale`` in the usual CFG
  sense (1 = no guidance, default 8.5) and embeds ``w = guidance_scale - 1``;
- the original LCM code (and the paper's CFG formulation) embeds ``w = guidance_scale``.

torch only; no ComfyUI, no diffusers.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

DIFFUSERS = "diffusers: w = guidance_scale - 1"
ORIGINAL = "original LCM: w = guidance_scale"
W_CONVENTIONS = (DIFFUSERS, ORIGINAL)

# diffusers' LatentConsistencyModelPipeline default guidance_scale.
DEFAULT_GUIDANCE_SCALE = 8.5

# The VDM embedding's base period (diffusers hard-codes log(10000)) and its scale on w.
_MAX_PERIOD = 10000.0
_W_SCALE = 1000.0


def guidance_w(guidance_scale: float, convention: str = DIFFUSERS) -> float:
    """The w that goes into the embedding for ``guidance_scale`` under ``convention``.

    diffusers subtracts 1 (``LatentConsistencyModelPipeline.__call__``: ``w =
    torch.tensor(self.guidance_scale - 1)``) so that its guidance_scale means what CFG's does;
    the original LCM pipeline passes guidance_scale through unchanged.
    """
    scale = float(guidance_scale)
    if not math.isfinite(scale):
        raise ValueError(f"guidance_scale={guidance_scale!r} is not a finite number; use e.g. 8.5")
    if convention == DIFFUSERS:
        return scale - 1.0
    if convention == ORIGINAL:
        return scale
    raise ValueError(f"w_convention={convention!r}: expected one of {list(W_CONVENTIONS)}")


def guidance_scale_embedding(w: Union[float, Sequence[float], torch.Tensor], embedding_dim: int) -> torch.Tensor:
    """Sinusoidal embedding of 1000 * w, shape (len(w), embedding_dim), float32 on the CPU.

    The formula of diffusers' ``LatentConsistencyModelPipeline.get_guidance_scale_embedding``
    (after VDM's ``get_timestep_embedding``): with h = embedding_dim // 2 and frequencies
    f_i = exp(-i * log(10000) / (h - 1)), i = 0..h-1, the embedding is
    [sin(1000 w f_0..f_{h-1}), cos(1000 w f_0..f_{h-1})], sin half first, and a trailing zero
    when embedding_dim is odd. Every operation is float32 in the reference's order, so the
    values are the reference's bit for bit (w itself is rounded to float32 first, as
    ``torch.tensor(python_float)`` does there).
    """
    dim = int(embedding_dim)
    if dim < 4:
        # h - 1 would be 0: the reference divides by zero and returns NaN.
        raise ValueError(f"embedding_dim={embedding_dim!r}: the guidance embedding needs at least 4 channels "
                         "(LCM checkpoints use 256)")
    w_t = torch.as_tensor(w, dtype=torch.float32, device="cpu").reshape(-1) * _W_SCALE
    half = dim // 2
    step = torch.log(torch.tensor(_MAX_PERIOD, dtype=torch.float32)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = w_t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
