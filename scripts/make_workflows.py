#!/usr/bin/env python3
"""Write the example workflows (UI and API format) from the short descriptions below.

    make workflows                 # starts a ComfyUI with the pack, writes example_workflows/
    python scripts/make_workflows.py --check    # exit 1 if a file differs from what it would write

Each workflow is described once, here: nodes, their places on the canvas, the widget
values that differ from the node's defaults, the links, groups and notes. Everything else
(the input and output slots, widget order, defaults, the link table, node order) comes from
the running server's /object_info, so the files always match the nodes as they are declared.
The UI file is what ComfyUI's templates browser offers; the API file (example_workflows/api/)
is the same graph as the front end queues it (comfy_host.ui_to_api), which the demo and the
tests post. tests/test_workflows.py checks that the committed files equal what this writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_host  # noqa: E402

EXAMPLES = REPO_ROOT / "example_workflows"
PACK_ID = "lcm-multistep"  # the Comfy Registry id ([project] name); lets front ends offer to install the pack
CORE_VERSION = "0.3.75"  # the ComfyUI the workflows were made against
FRONTEND_VERSION = "1.32.9"
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}
GROUP_COLORS = ("#3f789e", "#8A8", "#a1309b", "#b58b2a")

Link = Tuple[int, int]  # (source node id, output slot)


@dataclasses.dataclass(frozen=True)
class Node:
    id: int
    type: str
    pos: Tuple[int, int]
    size: Tuple[int, int]
    title: Optional[str] = None
    widgets: Dict[str, Any] = dataclasses.field(default_factory=dict)
    links: Dict[str, Link] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Note:
    id: int
    pos: Tuple[int, int]
    size: Tuple[int, int]
    text: str


@dataclasses.dataclass(frozen=True)
class Group:
    title: str
    bounding: Tuple[int, int, int, int]  # x, y, width, height


@dataclasses.dataclass(frozen=True)
class Workflow:
    name: str
    uid: int  # the last part of the workflow's id (stable, so regenerating changes nothing)
    nodes: Sequence[Node]
    notes: Sequence[Note] = ()
    groups: Sequence[Group] = ()


# ---------------------------------------------------------------------------
# The workflows
# ---------------------------------------------------------------------------

PROMPT = "a photo of a red fox sitting in fresh snow, soft morning light, highly detailed"
NEGATIVE = "blurry, low quality"
LCM_LORA_SD15 = "lcm-lora-sdv1-5.safetensors"

# The LCM nodes and both passes of a txt2img -> img2img graph, given where MODEL and CLIP come from.
# Node ids 1-14 are those of the first release's files (saved copies of users keep them).


def checkpoint_and_lora(title: str, lora_name: str) -> List[Node]:
    """An SD1.5 checkpoint (node 1) and a LoRA on its MODEL and CLIP (node 15): the LoRA graphs' first column."""
    return [
        Node(1, "CheckpointLoaderSimple", (40, 60), (370, 100),
             widgets={"ckpt_name": "v1-5-pruned-emaonly.safetensors"}),
        Node(15, "LoraLoader", (40, 200), (370, 130), title,
             {"lora_name": lora_name, "strength_model": 1.0, "strength_clip": 1.0}, {"model": (1, 0), "clip": (1, 1)}),
    ]


def prompts(clip: Link) -> List[Node]:
    return [
        Node(2, "CLIPTextEncode", (460, 60), (400, 160), "Positive prompt", {"text": PROMPT}, {"clip": clip}),
        Node(3, "CLIPTextEncode", (460, 260), (400, 140), "Negative prompt (ignored at cfg 1.0)", {"text": NEGATIVE},
             {"clip": clip}),
    ]


def lcm_nodes(model: Link, config_pos: Tuple[int, int], tcd_gamma: Optional[float] = None) -> List[Node]:
    """The config, timesteps and sampler nodes and the txt2img SamplerCustom; TCD's when tcd_gamma is set."""
    if tcd_gamma is None:
        sampler = Node(7, "LCMSampler", (460, 620), (360, 50), links={"config": (5, 0)})
        timesteps = Node(6, "LCMTimesteps", (460, 720), (360, 200), "LCM Timesteps (txt2img: 4 steps)",
                         {"steps": 4, "strength": 1.0}, {"config": (5, 0)})
    else:
        sampler = Node(7, "TCDSampler", (460, 600), (360, 80), "TCD Sampler (gamma = diffusers' eta)",
                       {"gamma": tcd_gamma}, {"config": (5, 0)})
        timesteps = Node(6, "LCMTimesteps", (460, 740), (360, 220), "LCM Timesteps (scheduler tcd: 4 steps)",
                         {"steps": 4, "strength": 1.0, "scheduler": "tcd"}, {"config": (5, 0)})
    return [
        Node(4, "EmptyLatentImage", (460, 450), (360, 110)),
        Node(5, "LCMSchedulerConfig", config_pos, (370, 560), links={"model": model}),
        sampler,
        timesteps,
        Node(8, "SamplerCustom", (900, 60), (440, 440), "SamplerCustom (txt2img)",
             {"add_noise": True, "noise_seed": 42, "cfg": 1.0},
             {"model": model, "positive": (2, 0), "negative": (3, 0), "sampler": (7, 0), "sigmas": (6, 0),
              "latent_image": (4, 0)}),
    ]


def decode_and_save(node_id: int, samples: Link, vae: Link, y: int, prefix: str, save: str = "SaveImage",
                    save_widgets: Optional[Dict[str, Any]] = None) -> List[Node]:
    return [
        Node(node_id, "VAEDecode", (1380, y), (210, 50), links={"samples": samples, "vae": vae}),
        Node(node_id + 1, save, (1620, y), (420, 480), widgets={"filename_prefix": prefix, **(save_widgets or {})},
             links={"images": (node_id, 0)}),
    ]


LCM_LORA_NOTE = (
    "LCM-LoRA on SD1.5: two files.\n"
    "- models/checkpoints/v1-5-pruned-emaonly.safetensors: any SD1.5 checkpoint (pick yours in Load "
    "Checkpoint).\n"
    f"- models/loras/{LCM_LORA_SD15}: pytorch_lora_weights.safetensors from "
    "huggingface.co/latent-consistency/lcm-lora-sdv1-5, saved under this name.\n"
    "Without the LoRA, 4 steps at cfg 1 give blurry images: LCM sampling needs an LCM-distilled model.\n"
    "For SDXL use an SDXL checkpoint with lcm-lora-sdxl, and EmptyLatentImage 1024x1024."
)

TCD_LORA_SD15 = "TCD-SD15-LoRA.safetensors"
TCD_NOTE = (
    "TCD-LoRA on SD1.5: 4 steps, gamma 0.3, cfg 1 (the card: TCDScheduler, num_inference_steps=4, eta=0.3, "
    "guidance_scale=0; gamma is diffusers' eta).\n"
    "- models/checkpoints/v1-5-pruned-emaonly.safetensors: any SD1.5 checkpoint.\n"
    f"- models/loras/{TCD_LORA_SD15}: pytorch_lora_weights.safetensors from huggingface.co/h1t/TCD-SD15-LoRA, "
    "saved under this name.\n"
    "Hyper-SD's one-step LoRA (Hyper-SD15-1step-lora.safetensors, huggingface.co/ByteDance/Hyper-SD) runs in "
    "this graph too: steps 1, gamma 1.0."
)

KSAMPLER_NOTE = (
    "The plain KSampler with this pack: sampler lcm_diffusers and scheduler lcm_diffusers give diffusers' "
    "LCMScheduler, seed for seed (tcd_diffusers: TCD at gamma 0.3).\n"
    "- models/checkpoints/v1-5-pruned-emaonly.safetensors: any SD1.5 checkpoint.\n"
    f"- models/loras/{LCM_LORA_SD15}: pytorch_lora_weights.safetensors from "
    "huggingface.co/latent-consistency/lcm-lora-sdv1-5, saved under this name.\n"
    "denoise below 1 equals diffusers' strength only for some values (README: 4 steps: 0.2, 0.4, 0.5, 0.8)."
)

FULL_UNET_NOTE = (
    "A full LCM UNet (LCM_Dreamshaper_v7): two files from huggingface.co/SimianLuo/LCM_Dreamshaper_v7.\n"
    "- models/diffusion_models/LCM_Dreamshaper_v7_unet.safetensors: unet/diffusion_pytorch_model.safetensors "
    "of that repository, saved under this name. Load LCM UNet restores its guidance embedding.\n"
    "- models/checkpoints/LCM_Dreamshaper_v7_4k.safetensors: the single-file checkpoint; only its CLIP and "
    "VAE are used here.\n"
    "Keep cfg at 1: the guidance (guidance_scale 8.5) is inside the UNet."
)

# Wan 2.1 T2V 1.3B as ComfyUI's own Wan template loads it (the Comfy-Org repackaged file names), with a
# step-distill LoRA. The file names are examples: users pick theirs in the loaders.
WAN_UNET = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN_TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN_LORA = "wan2.1_t2v_1.3B_step_distill_lora.safetensors"
WAN_SHIFT = 8.0  # comfy/supported_models.py WAN21_T2V sampling_settings: the shift a Wan 2.1 model loads with
WAN_PROMPT = "a red fox trotting through fresh snow in a pine forest, soft morning light, tracking camera"
# SaveAnimatedWEBP as ComfyUI's Wan examples set it: 16 fps (Wan 2.1's frame rate), lossy at quality 90.
WAN_SAVE: Dict[str, Any] = {"save": "SaveAnimatedWEBP",
                            "save_widgets": {"fps": 16.0, "lossless": False, "quality": 90, "method": "default"}}

FLOW_WAN_NOTE = (
    "Wan 2.1 text-to-video 1.3B with a few-step distillation LoRA: 4 steps at cfg 1.0, sampled as diffusers' "
    "FlowMatchLCMScheduler (KSampler sampler and scheduler lcm_diffusers). Four files; the names are examples "
    "(as Comfy-Org's repackaged Wan 2.1 files are named): pick yours in each loader.\n"
    f"- models/diffusion_models/{WAN_UNET}: the Wan 2.1 T2V 1.3B diffusion model.\n"
    f"- models/text_encoders/{WAN_TEXT_ENCODER}: the umt5-xxl text encoder (Load CLIP, type wan).\n"
    f"- models/vae/{WAN_VAE}: the Wan 2.1 VAE.\n"
    f"- models/loras/{WAN_LORA}: a step-distill LoRA made for Wan 2.1 T2V 1.3B (lightx2v or CausVid style); "
    "the file name is your choice. A 14B LoRA does not fit the 1.3B model.\n"
    f"shift {WAN_SHIFT}: ComfyUI's own Wan 2.1 default (the shift the model loads with, also set by ComfyUI's Wan "
    "template); set the value your LoRA's card gives. Both rows sample at the shift the model carries: at 8.0 the "
    "4 steps start at sigmas 1, 0.9418, 0.8038, 0.0602, as diffusers' WanPipeline with FlowMatchLCMScheduler.\n"
    "Lower row: the same run as SamplerCustom + FlowMatch LCM Timesteps + LCM Sampler (same seed, same video), "
    "for custom sigmas or an img2img strength; LCM Sampler wants a config, and the flow step uses none of its "
    "fields. The LoRA authors' own timesteps (lightx2v, CausVid, rCM): the LCM / TCD Preset node (docs/presets.md)."
)


def wan_loaders() -> List[Node]:
    """Wan 2.1's diffusion model, its LoRA and shift (MODEL: node 3), text encoder (node 4) and VAE (node 5)."""
    return [
        Node(1, "UNETLoader", (40, 60), (370, 90), "Load Diffusion Model (Wan 2.1 T2V 1.3B)",
             {"unet_name": WAN_UNET}),
        Node(2, "LoraLoaderModelOnly", (40, 190), (370, 90), "Step-distill LoRA", {"lora_name": WAN_LORA},
             {"model": (1, 0)}),
        Node(3, "ModelSamplingSD3", (40, 320), (370, 60), f"ModelSamplingSD3 (shift {WAN_SHIFT})",
             {"shift": WAN_SHIFT}, {"model": (2, 0)}),
        *wan_text_encoder_and_vae(4, y=420),
    ]


def wan_text_encoder_and_vae(clip_id: int, y: int) -> List[Node]:
    """umt5-xxl (node clip_id) and the Wan 2.1 VAE (clip_id + 1) in the first column, from height y."""
    return [
        Node(clip_id, "CLIPLoader", (40, y), (370, 110), "Load CLIP (umt5-xxl, type wan)",
             {"clip_name": WAN_TEXT_ENCODER, "type": "wan"}),
        Node(clip_id + 1, "VAELoader", (40, y + 150), (370, 60), widgets={"vae_name": WAN_VAE}),
    ]


def wan_prompts(first_id: int, clip: Link) -> List[Node]:
    """The positive and negative CLIPTextEncode (nodes first_id, first_id + 1) of the Wan graphs."""
    return [
        Node(first_id, "CLIPTextEncode", (460, 60), (400, 160), "Positive prompt", {"text": WAN_PROMPT},
             {"clip": clip}),
        Node(first_id + 1, "CLIPTextEncode", (460, 260), (400, 140), "Negative prompt (ignored at cfg 1.0)",
             {"text": NEGATIVE}, {"clip": clip}),
    ]


# Wan 2.1 T2V 14B with lightx2v's StepDistill-CfgDistill LoRA, sampled by the LCMPreset of that name. The
# LoRA's name and strength are those LightX2V's own config loads (configs/distill/wan_t2v_distill_4step_cfg_lora.json
# at the preset's source commit 2df6272, which also sets 832x480 and 81 frames); the model's are Comfy-Org's.
WAN14B_UNET = "wan2.1_t2v_14B_fp16.safetensors"
WAN14B_UNET_FP8 = "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
LIGHTX2V_LORA = "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors"
LIGHTX2V_PRESET = "lightx2v Wan2.1 StepDistill-CfgDistill 4-step (LCM)"

LIGHTX2V_NOTE = (
    "Wan 2.1 text-to-video 14B with lightx2v's StepDistill-CfgDistill LoRA, sampled as its authors sampled it: "
    f"LCM / TCD Preset '{LIGHTX2V_PRESET}' gives SamplerCustom the flow LCM step and the sigmas 1, 0.9375, "
    "0.8333, 0.625, 0, at cfg 1.0 (no CFG pass: the LoRA is CFG-distilled). Four files; pick yours in each loader.\n"
    f"- models/diffusion_models/{WAN14B_UNET}: the Wan 2.1 T2V 14B diffusion model (Comfy-Org's name; "
    f"{WAN14B_UNET_FP8} works too). The LoRA is made for the 14B model: the 1.3B one does not take it.\n"
    f"- models/loras/{LIGHTX2V_LORA}: the LoRA under the name lightx2v publishes it (LightX2V's "
    "configs/distill/wan_t2v_distill_4step_cfg_lora.json loads it at strength 1.0).\n"
    f"- models/text_encoders/{WAN_TEXT_ENCODER}: the umt5-xxl text encoder (Load CLIP, type wan).\n"
    f"- models/vae/{WAN_VAE}: the Wan 2.1 VAE.\n"
    "Source: github.com/ModelTC/LightX2V@2df627236d5cc4449e7defa6a3cc0caef3e2212a "
    "lightx2v/models/schedulers/wan/step_distill/scheduler.py (the preset's about output quotes it).\n"
    "Why not KSampler lcm_diffusers: at the shift Wan loads with (8) its 4 steps are sigmas 1, 0.9418, 0.8038, "
    "0.0602 (diffusers' FlowMatchLCMScheduler). The authors distilled on timesteps 1000, 750, 500, 250 shifted by "
    "5 (denoising_step_list, sample_shift 5), i.e. the preset's sigmas, fixed: no ModelSamplingSD3 shift changes "
    "them. With the model connected, the preset refuses a model ComfyUI does not run as Wan 2.1 (WAN21). "
    "832x480, 81 frames: LightX2V's config."
)


WORKFLOWS = (
    Workflow(
        "lcm_txt2img_then_img2img", 1,
        nodes=[
            *checkpoint_and_lora("LCM-LoRA", LCM_LORA_SD15),
            *prompts(clip=(15, 1)),
            *lcm_nodes(model=(15, 0), config_pos=(40, 400)),
            *decode_and_save(9, samples=(8, 0), vae=(1, 2), y=60, prefix="lcm_txt2img"),
            Node(11, "LCMTimesteps", (460, 960), (360, 200), "LCM Timesteps (img2img: strength 0.5)",
                 {"steps": 4, "strength": 0.5}, {"config": (5, 0)}),
            Node(12, "SamplerCustom", (900, 660), (440, 440), "SamplerCustom (img2img on the txt2img latent)",
                 {"add_noise": True, "noise_seed": 43, "cfg": 1.0},
                 {"model": (15, 0), "positive": (2, 0), "negative": (3, 0), "sampler": (7, 0), "sigmas": (11, 0),
                  "latent_image": (8, 0)}),
            *decode_and_save(13, samples=(12, 0), vae=(1, 2), y=660, prefix="lcm_img2img"),
        ],
        notes=[Note(16, (40, -180), (780, 150), LCM_LORA_NOTE)],
        groups=[Group("txt2img: 4 LCM steps", (880, -20, 1180, 580)),
                Group("img2img at strength 0.5 on the txt2img latent", (880, 580, 1180, 580))],
    ),
    Workflow(
        "lcm_full_unet_txt2img", 2,
        nodes=[
            Node(15, "LCMUNetLoader", (40, -80), (370, 150),
                 widgets={"unet_name": "LCM_Dreamshaper_v7_unet.safetensors"}),
            Node(1, "CheckpointLoaderSimple", (40, 120), (370, 100), "Load Checkpoint (CLIP and VAE only)",
                 {"ckpt_name": "LCM_Dreamshaper_v7_4k.safetensors"}),
            *prompts(clip=(1, 1)),
            *lcm_nodes(model=(15, 0), config_pos=(40, 300)),
            *decode_and_save(9, samples=(8, 0), vae=(1, 2), y=60, prefix="lcm_full_unet"),
        ],
        notes=[Note(16, (40, -300), (780, 150), FULL_UNET_NOTE)],
        groups=[Group("full LCM UNet: guidance inside the UNet, so cfg stays 1", (880, -20, 1180, 580))],
    ),
    Workflow(
        "tcd_txt2img", 3,
        nodes=[
            *checkpoint_and_lora("TCD-LoRA", TCD_LORA_SD15),
            *prompts(clip=(15, 1)),
            *lcm_nodes(model=(15, 0), config_pos=(40, 400), tcd_gamma=0.3),
            *decode_and_save(9, samples=(8, 0), vae=(1, 2), y=60, prefix="tcd_txt2img"),
        ],
        notes=[Note(16, (40, -180), (780, 150), TCD_NOTE)],
        groups=[Group("txt2img: 4 TCD steps at gamma 0.3", (880, -20, 1180, 580))],
    ),
    Workflow(
        "ksampler_lcm_lora", 4,
        nodes=[
            *checkpoint_and_lora("LCM-LoRA", LCM_LORA_SD15),
            *prompts(clip=(15, 1)),
            Node(4, "EmptyLatentImage", (460, 450), (360, 110)),
            Node(8, "KSampler", (900, 60), (440, 480), "KSampler (lcm_diffusers)",
                 {"seed": 42, "steps": 4, "cfg": 1.0, "sampler_name": "lcm_diffusers", "scheduler": "lcm_diffusers",
                  "denoise": 1.0},
                 {"model": (15, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (4, 0)}),
            *decode_and_save(9, samples=(8, 0), vae=(1, 2), y=60, prefix="ksampler_lcm"),
        ],
        notes=[Note(16, (40, -180), (780, 150), KSAMPLER_NOTE)],
        groups=[Group("the plain KSampler: 4 LCM steps as diffusers runs them", (880, -20, 1180, 580))],
    ),
    Workflow(
        "flow_lcm_wan_t2v", 5,
        nodes=[
            *wan_loaders(),
            *wan_prompts(6, clip=(4, 0)),
            Node(8, "EmptyHunyuanLatentVideo", (460, 450), (400, 160), "Empty latent video (832x480, 33 frames)",
                 {"width": 832, "height": 480, "length": 33, "batch_size": 1}),
            Node(9, "KSampler", (900, 60), (440, 480), "KSampler (lcm_diffusers: FlowMatchLCMScheduler)",
                 {"seed": 42, "steps": 4, "cfg": 1.0, "sampler_name": "lcm_diffusers", "scheduler": "lcm_diffusers",
                  "denoise": 1.0},
                 {"model": (3, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (8, 0)}),
            *decode_and_save(10, samples=(9, 0), vae=(5, 0), y=60, prefix="flow_lcm_wan", **WAN_SAVE),
            Node(18, "LCMSchedulerConfig", (40, 700), (370, 560), "LCM Scheduler Config (defaults)"),
            Node(12, "LCMSampler", (460, 690), (400, 60), links={"config": (18, 0)}),
            Node(13, "FlowMatchLCMTimesteps", (460, 830), (400, 260), "FlowMatch LCM Timesteps (4 steps)",
                 {"steps": 4, "strength": 1.0}, {"model": (3, 0)}),
            Node(14, "SamplerCustom", (900, 660), (440, 440), "SamplerCustom (the same 4 steps)",
                 {"add_noise": True, "noise_seed": 42, "cfg": 1.0},
                 {"model": (3, 0), "positive": (6, 0), "negative": (7, 0), "sampler": (12, 0), "sigmas": (13, 0),
                  "latent_image": (8, 0)}),
            *decode_and_save(15, samples=(14, 0), vae=(5, 0), y=660, prefix="flow_lcm_wan_custom", **WAN_SAVE),
        ],
        notes=[Note(17, (40, -270), (780, 230), FLOW_WAN_NOTE)],
        groups=[Group("Wan 2.1 T2V: 4 flow LCM steps in the plain KSampler", (880, -20, 1180, 580)),
                Group("the same with SamplerCustom + FlowMatch LCM Timesteps", (880, 580, 1180, 580))],
    ),
    Workflow(
        "flow_lightx2v_wan_preset", 6,
        nodes=[
            Node(1, "UNETLoader", (40, 60), (370, 90), "Load Diffusion Model (Wan 2.1 T2V 14B)",
                 {"unet_name": WAN14B_UNET}),
            Node(2, "LoraLoaderModelOnly", (40, 190), (370, 90), "lightx2v StepDistill-CfgDistill LoRA (14B)",
                 {"lora_name": LIGHTX2V_LORA, "strength_model": 1.0}, {"model": (1, 0)}),
            *wan_text_encoder_and_vae(3, y=320),
            *wan_prompts(5, clip=(3, 0)),
            Node(7, "EmptyHunyuanLatentVideo", (460, 450), (400, 160), "Empty latent video (832x480, 81 frames)",
                 {"width": 832, "height": 480, "length": 81, "batch_size": 1}),
            Node(8, "LCMPreset", (460, 690), (400, 200), "LCM / TCD Preset (lightx2v Wan2.1, LCM step)",
                 {"preset": LIGHTX2V_PRESET, "steps": 0, "strength": 1.0}, {"model": (2, 0)}),
            Node(9, "SamplerCustom", (900, 60), (440, 440), "SamplerCustom (the preset's sampler and sigmas)",
                 {"add_noise": True, "noise_seed": 42, "cfg": 1.0},
                 {"model": (2, 0), "positive": (5, 0), "negative": (6, 0), "sampler": (8, 0), "sigmas": (8, 1),
                  "latent_image": (7, 0)}),
            *decode_and_save(10, samples=(9, 0), vae=(4, 0), y=60, prefix="flow_lightx2v_wan", **WAN_SAVE),
        ],
        notes=[Note(12, (40, -250), (780, 210), LIGHTX2V_NOTE)],
        groups=[Group("Wan 2.1 T2V 14B + lightx2v LoRA: the authors' 4 steps", (880, -20, 1180, 580))],
    ),
)


# ---------------------------------------------------------------------------
# Building the files
# ---------------------------------------------------------------------------


def _order(workflow: Workflow) -> Dict[int, int]:
    """Execution order as the front end stores it: sources first, ties by id; notes last."""
    pending = {node.id: {source for source, _ in node.links.values()} for node in workflow.nodes}
    order: Dict[int, int] = {}
    while pending:
        ready = sorted(nid for nid, sources in pending.items() if sources <= set(order))
        if not ready:
            raise ValueError(f"{workflow.name}: the links form a cycle among nodes {sorted(pending)}")
        order[ready[0]] = len(order)
        del pending[ready[0]]
    for note in workflow.notes:
        order[note.id] = len(order)
    return order


def _slot_type(input_type: Any) -> str:
    return "COMBO" if isinstance(input_type, list) else str(input_type)


def _default(input_type: Any, options: Dict[str, Any]) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(input_type, list):
        return input_type[0] if input_type else None  # file lists are empty on the generating server
    return options.get("options", [None])[0] if input_type == "COMBO" else None


def build_ui(workflow: Workflow, object_info: Dict[str, Any]) -> Dict[str, Any]:
    """The UI-format workflow (schema version 0.4, as front end 1.32 saves it)."""
    order = _order(workflow)
    by_id = {node.id: node for node in workflow.nodes}
    # Link ids in the order the front end would number them when wiring node by node.
    wires = sorted(((order[node.id], name, node.id, source) for node in workflow.nodes
                    for name, source in node.links.items()), key=lambda w: (w[0], w[1]))
    link_ids = {(target, name): index + 1 for index, (_, name, target, _) in enumerate(wires)}
    links: List[List[Any]] = []
    outgoing: Dict[Link, List[int]] = {}
    nodes: List[Dict[str, Any]] = []
    for node in sorted(workflow.nodes, key=lambda n: order[n.id]):
        info = object_info[node.type]
        specs = comfy_host.input_specs(info)
        unknown = (set(node.widgets) | set(node.links)) - {name for name, *_ in specs}
        if unknown:
            raise ValueError(f"{workflow.name} node {node.id} ({node.type}): no inputs named {sorted(unknown)}")
        linked, widgets = [], []
        for name, input_type, options, optional in specs:
            slot: Dict[str, Any] = {"localized_name": name, "name": name, "type": _slot_type(input_type)}
            if comfy_host.is_widget(input_type, options):
                slot["widget"] = {"name": name}
            slot["link"] = link_ids.get((node.id, name))
            if optional:
                slot["shape"] = 7
            (widgets if "widget" in slot else linked).append(slot)
        inputs = linked + widgets  # the front end lists link-only inputs before widget inputs
        for index, slot in enumerate(inputs):
            if slot["link"] is not None:
                source = node.links[slot["name"]]
                kind = object_info[by_id[source[0]].type]["output"][source[1]]
                links.append([slot["link"], source[0], source[1], node.id, index, kind])
                outgoing.setdefault(source, []).append(slot["link"])
        defaults = {name: _default(input_type, options) for name, input_type, options, _ in specs}
        values = [node.widgets.get(name, defaults.get(name)) if name else "fixed"
                  for name in comfy_host.widget_slots(info)]
        entry: Dict[str, Any] = {"id": node.id, "type": node.type}
        if node.title:
            entry["title"] = node.title
        entry.update(pos=list(node.pos), size=list(node.size), flags={}, order=order[node.id], mode=0, inputs=inputs)
        entry["outputs"] = [{"localized_name": name, "name": name, "type": kind}
                            for kind, name in zip(info["output"], info["output_name"])]
        ours = info["python_module"].startswith("custom_nodes.")
        entry["properties"] = {"Node name for S&R": node.type, "cnr_id": PACK_ID if ours else "comfy-core",
                               **({} if ours else {"ver": CORE_VERSION})}
        entry["widgets_values"] = values
        nodes.append(entry)
    # Outputs list their links once every node's inputs are wired.
    for entry in nodes:
        for slot_index, output in enumerate(entry["outputs"]):
            output["links"] = sorted(outgoing.get((entry["id"], slot_index), []))
            if output["links"]:
                output["slot_index"] = slot_index
    for note in workflow.notes:
        nodes.append({"id": note.id, "type": "Note", "pos": list(note.pos), "size": list(note.size), "flags": {},
                      "order": order[note.id], "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [note.text], **NOTE_COLORS})
    all_ids = [node.id for node in workflow.nodes] + [note.id for note in workflow.notes]
    return {
        "id": f"6c636d2d-6d75-4c74-9973-{workflow.uid:012d}",
        "revision": 0,
        "last_node_id": max(all_ids),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": sorted(links),
        "groups": [{"id": index + 1, "title": group.title, "bounding": list(group.bounding),
                    "color": GROUP_COLORS[index % len(GROUP_COLORS)], "font_size": 24, "flags": {}}
                   for index, group in enumerate(workflow.groups)],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [40, 60]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def render(workflow: Workflow, object_info: Dict[str, Any]) -> Dict[Path, str]:
    """{path: file text} of the UI and API files of one workflow."""
    ui = build_ui(workflow, object_info)
    api = comfy_host.ui_to_api(ui, object_info)
    return {
        EXAMPLES / f"{workflow.name}.json": json.dumps(ui, indent=2) + "\n",
        EXAMPLES / "api" / f"{workflow.name}.api.json": json.dumps(api, indent=2) + "\n",
    }


def render_all(object_info: Dict[str, Any]) -> Dict[Path, str]:
    files: Dict[Path, str] = {}
    for workflow in WORKFLOWS:
        files.update(render(workflow, object_info))
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    args = parser.parse_args(argv)
    with comfy_host.comfy_server() as server:
        files = render_all(server.object_info())
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]
    for path in stale:
        rel = path.relative_to(REPO_ROOT)
        if args.check:
            print(f"would change: {rel}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path], encoding="utf-8")
            print(f"wrote {rel}")
    if not stale:
        print("example workflows are up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
