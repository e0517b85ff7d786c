#!/usr/bin/env python3
"""Write the smallest SD1.5-layout checkpoint that ComfyUI loads as SD1.5 (and a LoRA for it).

    python scripts/make_tiny_checkpoint.py PATH [--seed N] [--lora LORA_PATH]

or, from Python, ``make_tiny_checkpoint(path, seed)`` and ``make_tiny_lora(path, seed)``.

Random weights: images are noise. The file exists so that real ComfyUI graphs
(CheckpointLoaderSimple -> CLIPTextEncode -> KSampler / SamplerCustom ->
VAEDecode / VAEEncode -> SaveImage) run end to end in seconds on a CPU, with no
download. Only torch and safetensors are needed (no ComfyUI import, no pickle);
tests/test_host_smoke.py checks that the key set and shapes are exactly what
ComfyUI 0.3.75 builds for this file.

What ComfyUI needs, and why each part has the size it has:
- UNet ("model.diffusion_model."): checkpoint detection only accepts SD1.5 for
  model_channels 320, context_dim 768, no ADM, conv (not linear) transformer
  projections. Everything else may shrink: one level, one res block, one
  transformer block, no middle block (18.7M parameters).
- Text encoder ("cond_stage_model.transformer.text_model."): SD1.5's CLIP is
  built from a fixed CLIP-L config (12 layers, width 768, 49408 tokens) whatever
  the file holds, and ComfyUI does not initialise layer weights, so every CLIP
  weight must be in the file or the encoder reads uninitialised memory. That
  is 123M parameters, the bulk of the file. (text_projection cannot be loaded
  from an SD1.5 checkpoint at all; SD1.5 never uses it, as with real files.)
- VAE ("first_stage_model."): a TAESD (keys taesd_encoder.* / taesd_decoder.*,
  2.4M parameters) is the smallest VAE that ComfyUI detects in a checkpoint;
  the encoder is included so that VAEEncode works too.

Every tensor is drawn from its own torch.Generator seeded from (seed, key name),
so the file is a pure function of the seed.
"""

from __future__ import annotations

import argparse
import logging
import time
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

Shapes = dict[str, tuple[int, ...]]

# UNet and TAESD weights are stored in fp16 (ComfyUI casts on load). The CLIP
# text encoder is stored as float8_e4m3fn to halve the file: ComfyUI copies it
# into its fp16 text encoder on load (load_state_dict casts), so the encoder
# still runs in fp16, and the values are just as random.
UNET_DTYPE = torch.float16
CLIP_DTYPE = torch.float8_e4m3fn
VAE_DTYPE = torch.float16

MODEL_CHANNELS = 320  # required by SD1.5 detection
CONTEXT_DIM = 768  # required by SD1.5 detection
TIME_EMBED_DIM = 4 * MODEL_CHANNELS


def _resblock(prefix: str, c_in: int, c_out: int) -> Shapes:
    s: Shapes = {
        f"{prefix}in_layers.0.weight": (c_in,),
        f"{prefix}in_layers.0.bias": (c_in,),
        f"{prefix}in_layers.2.weight": (c_out, c_in, 3, 3),
        f"{prefix}in_layers.2.bias": (c_out,),
        f"{prefix}emb_layers.1.weight": (c_out, TIME_EMBED_DIM),
        f"{prefix}emb_layers.1.bias": (c_out,),
        f"{prefix}out_layers.0.weight": (c_out,),
        f"{prefix}out_layers.0.bias": (c_out,),
        f"{prefix}out_layers.3.weight": (c_out, c_out, 3, 3),
        f"{prefix}out_layers.3.bias": (c_out,),
    }
    if c_in != c_out:
        s[f"{prefix}skip_connection.weight"] = (c_out, c_in, 1, 1)
        s[f"{prefix}skip_connection.bias"] = (c_out,)
    return s


def _transformer(prefix: str, c: int) -> Shapes:
    t = f"{prefix}transformer_blocks.0."
    s: Shapes = {
        f"{prefix}norm.weight": (c,),
        f"{prefix}norm.bias": (c,),
        f"{prefix}proj_in.weight": (c, c, 1, 1),
        f"{prefix}proj_in.bias": (c,),
        f"{prefix}proj_out.weight": (c, c, 1, 1),
        f"{prefix}proj_out.bias": (c,),
        f"{t}ff.net.0.proj.weight": (8 * c, c),  # GEGLU: 2 x (4 c)
        f"{t}ff.net.0.proj.bias": (8 * c,),
        f"{t}ff.net.2.weight": (c, 4 * c),
        f"{t}ff.net.2.bias": (c,),
    }
    for attn, kv_dim in (("attn1", c), ("attn2", CONTEXT_DIM)):
        s[f"{t}{attn}.to_q.weight"] = (c, c)
        s[f"{t}{attn}.to_k.weight"] = (c, kv_dim)
        s[f"{t}{attn}.to_v.weight"] = (c, kv_dim)
        s[f"{t}{attn}.to_out.0.weight"] = (c, c)
        s[f"{t}{attn}.to_out.0.bias"] = (c,)
    for norm in ("norm1", "norm2", "norm3"):
        s[f"{t}{norm}.weight"] = (c,)
        s[f"{t}{norm}.bias"] = (c,)
    return s


def unet_shapes() -> Shapes:
    """One-level SD UNet: conv_in, [res+attn], no middle block, 2 x [res+attn], out."""
    c = MODEL_CHANNELS
    p = "model.diffusion_model."
    s: Shapes = {
        f"{p}time_embed.0.weight": (TIME_EMBED_DIM, c),
        f"{p}time_embed.0.bias": (TIME_EMBED_DIM,),
        f"{p}time_embed.2.weight": (TIME_EMBED_DIM, TIME_EMBED_DIM),
        f"{p}time_embed.2.bias": (TIME_EMBED_DIM,),
        f"{p}input_blocks.0.0.weight": (c, 4, 3, 3),
        f"{p}input_blocks.0.0.bias": (c,),
        f"{p}out.0.weight": (c,),
        f"{p}out.0.bias": (c,),
        f"{p}out.2.weight": (4, c, 3, 3),
        f"{p}out.2.bias": (4,),
    }
    s.update(_resblock(f"{p}input_blocks.1.0.", c, c))
    s.update(_transformer(f"{p}input_blocks.1.1.", c))
    # Each output block concatenates one skip connection (c channels).
    for i in range(2):
        s.update(_resblock(f"{p}output_blocks.{i}.0.", 2 * c, c))
        s.update(_transformer(f"{p}output_blocks.{i}.1.", c))
    return s


def clip_shapes() -> Shapes:
    """CLIP-L text model (the SD1.5 text encoder), SD1.5 checkpoint key names."""
    d, ff, layers = 768, 3072, 12
    p = "cond_stage_model.transformer.text_model."
    s: Shapes = {
        f"{p}embeddings.token_embedding.weight": (49408, d),
        f"{p}embeddings.position_embedding.weight": (77, d),
        f"{p}final_layer_norm.weight": (d,),
        f"{p}final_layer_norm.bias": (d,),
    }
    for i in range(layers):
        q = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{q}self_attn.{proj}.weight"] = (d, d)
            s[f"{q}self_attn.{proj}.bias"] = (d,)
        for norm in ("layer_norm1", "layer_norm2"):
            s[f"{q}{norm}.weight"] = (d,)
            s[f"{q}{norm}.bias"] = (d,)
        s[f"{q}mlp.fc1.weight"] = (ff, d)
        s[f"{q}mlp.fc1.bias"] = (ff,)
        s[f"{q}mlp.fc2.weight"] = (d, ff)
        s[f"{q}mlp.fc2.bias"] = (d,)
    return s


def taesd_shapes() -> Shapes:
    """comfy.taesd.taesd.TAESD(latent_channels=4): Sequential indices as ComfyUI builds them."""
    ch = 64
    p = "first_stage_model."
    s: Shapes = {f"{p}vae_scale": (), f"{p}vae_shift": ()}

    def conv(name: str, c_in: int, c_out: int, bias: bool = True) -> None:
        s[f"{name}.weight"] = (c_out, c_in, 3, 3)
        if bias:
            s[f"{name}.bias"] = (c_out,)

    def block(name: str) -> None:
        for j in (0, 2, 4):  # conv, ReLU, conv, ReLU, conv
            conv(f"{name}.conv.{j}", ch, ch)

    enc = f"{p}taesd_encoder"
    conv(f"{enc}.0", 3, ch)
    block(f"{enc}.1")
    i = 2
    for _ in range(3):  # stride-2 conv then three blocks, three times
        conv(f"{enc}.{i}", ch, ch, bias=False)
        for k in range(1, 4):
            block(f"{enc}.{i + k}")
        i += 4
    conv(f"{enc}.{i}", ch, 4)

    dec = f"{p}taesd_decoder"
    conv(f"{dec}.1", 4, ch)  # 0 is Clamp, 2 is ReLU
    i = 3
    for _ in range(3):  # three blocks, Upsample, conv without bias
        for k in range(3):
            block(f"{dec}.{i + k}")
        conv(f"{dec}.{i + 4}", ch, ch, bias=False)
        i += 5
    block(f"{dec}.{i}")
    conv(f"{dec}.{i + 1}", ch, 3)
    return s


def checkpoint_shapes() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    out: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for shapes, dtype in ((unet_shapes(), UNET_DTYPE), (clip_shapes(), CLIP_DTYPE), (taesd_shapes(), VAE_DTYPE)):
        out.update({k: (v, dtype) for k, v in shapes.items()})
    return out


def _init(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded values of a sensible scale, so that fp16 activations stay finite."""
    if name.endswith("vae_scale"):
        return torch.ones(shape)
    if name.endswith("vae_shift"):
        return torch.zeros(shape)
    gen = torch.Generator().manual_seed((seed * 2654435761 + zlib.crc32(name.encode())) % (2**63))
    x = torch.randn(shape, generator=gen)
    if len(shape) >= 2:  # linear / conv / embedding: variance 1 / fan_in
        fan_in = 1
        for n in shape[1:]:
            fan_in *= n
        return x / fan_in**0.5
    if name.endswith("bias"):
        return x * 0.02
    return 1.0 + 0.1 * x  # 1-D weights are all norm scales


def make_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint to `path` (parent folders are created); returns the path."""
    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: _init(name, shape, seed).to(dtype) for name, (shape, dtype) in checkpoint_shapes().items()}
    # safetensors metadata: plain strings only; lets a reader tell what the file is.
    save_file(tensors, str(path), metadata={"format": "pt", "lcm_multistep_tiny_sd15_seed": str(seed)})
    logger.info(
        "wrote %s: %d tensors, %.1fM parameters, %.1f MB in %.1f s",
        path,
        len(tensors),
        sum(t.numel() for t in tensors.values()) / 1e6,
        path.stat().st_size / 1e6,
        time.perf_counter() - start,
    )
    return path


LORA_RANK = 4


def lora_targets() -> Shapes:
    """The tiny checkpoint's 2-D UNet and CLIP weights that a LoRA in the kohya layout can patch:
    the attention projections, keyed by the names ComfyUI maps LoRA keys to."""
    def lora_name(prefix: str, key: str, strip: str) -> str:
        return prefix + key[len(strip):-len(".weight")].replace(".", "_")

    unet, clip = "model.diffusion_model.", "cond_stage_model.transformer."
    targets = {lora_name("lora_unet_", k, unet): shape for k, shape in unet_shapes().items()
               if ".attn" in k and k.endswith(".weight") and len(shape) == 2}
    targets.update({lora_name("lora_te_", k, clip): shape for k, shape in clip_shapes().items()
                    if ".layers.0.self_attn." in k and k.endswith("_proj.weight")})
    return targets


def write_lora(path: str | Path, targets: Shapes, seed: int = 0, scale: float = 0.1) -> Path:
    """Write a random rank-4 LoRA in the kohya layout (lora_down / lora_up / alpha) for `targets`
    ({kohya name: (rows, cols)} of the weights it patches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, (rows, cols) in targets.items():
        tensors[f"{name}.lora_down.weight"] = _init(f"{name}.down", (LORA_RANK, cols), seed).to(UNET_DTYPE)
        tensors[f"{name}.lora_up.weight"] = (_init(f"{name}.up", (rows, LORA_RANK), seed) * scale).to(UNET_DTYPE)
        tensors[f"{name}.alpha"] = torch.tensor(float(LORA_RANK), dtype=UNET_DTYPE)
    save_file(tensors, str(path), metadata={"format": "pt", "lcm_multistep_tiny_lora_seed": str(seed)})
    return path


def make_tiny_lora(path: str | Path, seed: int = 0, scale: float = 0.1) -> Path:
    """Write a rank-4 LoRA for the tiny checkpoint, so a LoraLoader in a bundled workflow runs on it
    as on a real LCM-LoRA. Random, like the model."""
    return write_lora(path, lora_targets(), seed, scale)


def make_tiny_clip_l(path: str | Path, seed: int = 0) -> Path:
    """The tiny checkpoint's CLIP-L text encoder (the same tensors) as a text-encoder file that
    CLIPLoader reads (keys without the checkpoint's prefix, plus the text_projection that
    SD1.5 files lack, so nothing is left uninitialised)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = "cond_stage_model.transformer."
    shapes = {**clip_shapes(), f"{prefix}text_projection.weight": (768, 768)}
    tensors = {name[len(prefix):]: _init(name, shape, seed).to(CLIP_DTYPE) for name, shape in shapes.items()}
    save_file(tensors, str(path), metadata={"format": "pt", "lcm_multistep_tiny_clip_l_seed": str(seed)})
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="output .safetensors file")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--lora", type=Path, help="also write a LoRA for it here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_tiny_checkpoint(args.path, args.seed)
    if args.lora:
        make_tiny_lora(args.lora, args.seed)


if __name__ == "__main__":
    main()
