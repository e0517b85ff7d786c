"""Scheduler settings of the few-step model families, each as its official model card gives them.

Every value below is quoted from the family's official model card or inference code (the
``source`` and ``quote`` of each preset); nothing unsourced is a preset. The cards are
diffusers code: ``guidance_scale`` there is classifier-free guidance for LoRAs (diffusers runs
CFG only above 1, so the cards' 0 means no CFG: ComfyUI's cfg 1.0) and the embedded w for
full LCM UNets (also cfg 1.0 in ComfyUI: the guidance is inside the UNet, set on
LCMUNetLoader). ``original_inference_steps`` is raised for presets whose card lists
timesteps off the 50-step LCM grid (DMD2, Hyper-SDXL 1-step): it only decides which
timesteps count as on the grid (no warning for the card's own list), never the sampling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

LCM = "lcm"
TCD = "tcd"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One family's settings: which scheduler, how many steps, the cfg to use in ComfyUI, and where
    each value comes from."""

    name: str
    scheduler: str  # LCM or TCD: diffusers' LCMScheduler or TCDScheduler
    steps: int
    cfg: float  # ComfyUI's cfg for the sampler (1.0: no CFG pass)
    source: str
    quote: str  # the card's own line(s) that give the values
    gamma: Optional[float] = None  # TCD's gamma, diffusers' eta
    timesteps: Tuple[int, ...] = ()  # the card's fixed timesteps, when it passes timesteps=[...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # LCMConfig fields the card sets
    note: str = ""

    def about(self) -> str:
        """One paragraph for the node's `about` output: what the preset runs and its source."""
        if self.timesteps:
            schedule = f"timesteps {', '.join(map(str, self.timesteps))}"
        else:
            schedule = f"{self.steps} step{'s' if self.steps != 1 else ''}"
        parts = [f"{self.name}: diffusers' {'TCDScheduler' if self.scheduler == TCD else 'LCMScheduler'}, {schedule}"]
        if self.gamma is not None:
            parts.append(f"gamma (eta) {self.gamma:g}")
        parts.extend(f"{key} {value}" for key, value in self.config.items() if key != "original_inference_steps")
        parts.append(f"cfg {self.cfg:g}")
        text = ", ".join(parts) + f". Source: {self.source} ({self.quote})."
        return f"{text} {self.note}".strip()


LCM_LORA_QUOTE = "num_inference_steps=4, guidance_scale=0; 'reduce the number of inference steps to just 2 to 8'"
FULL_LCM_NOTE = ("A full LCM UNet: load it with LCMUNetLoader, whose guidance_scale (the card's 8.0) goes into the "
                 "UNet; the sampler's cfg stays 1.")

# diffusers' txt2img pipelines hand the UNet unit-variance noise at whatever timestep the list starts
# with; ComfyUI scales an empty latent's noise by that timestep's sigma (sqrt(1 + sigma^2) only at
# the top of the schedule), so below t = 999 the two start from differently scaled noise.
LOW_START_NOTE = ("The card's schedule starts below t = 999: ComfyUI starts txt2img from noise scaled by that "
                  "timestep's sigma, diffusers from unit-variance noise, so here the images are not diffusers' "
                  "to the seed.")

PRESETS: Tuple[Preset, ...] = (
    Preset("LCM-LoRA SD1.5", LCM, 4, 1.0, "huggingface.co/latent-consistency/lcm-lora-sdv1-5", LCM_LORA_QUOTE),
    Preset("LCM-LoRA SDXL", LCM, 4, 1.0, "huggingface.co/latent-consistency/lcm-lora-sdxl", LCM_LORA_QUOTE),
    Preset("LCM-LoRA SSD-1B", LCM, 4, 1.0, "huggingface.co/latent-consistency/lcm-lora-ssd-1b", LCM_LORA_QUOTE),
    Preset("LCM Dreamshaper v7 (full UNet)", LCM, 4, 1.0, "huggingface.co/SimianLuo/LCM_Dreamshaper_v7",
           "num_inference_steps = 4, guidance_scale=8.0, lcm_origin_steps=50", note=FULL_LCM_NOTE),
    Preset("LCM SDXL (full UNet)", LCM, 4, 1.0, "huggingface.co/latent-consistency/lcm-sdxl",
           "num_inference_steps=4, guidance_scale=8.0", note=FULL_LCM_NOTE),
    Preset("DMD2 SDXL 4-step", LCM, 4, 1.0, "huggingface.co/tianweiy/DMD2",
           "num_inference_steps=4, guidance_scale=0, timesteps=[999, 749, 499, 249]",
           timesteps=(999, 749, 499, 249), config={"original_inference_steps": 100}),
    Preset("DMD2 SDXL 1-step", LCM, 1, 1.0, "huggingface.co/tianweiy/DMD2",
           "num_inference_steps=1, guidance_scale=0, timesteps=[399]", timesteps=(399,), note=LOW_START_NOTE),
    Preset("Hyper-SD 1-step unified LoRA (TCD)", TCD, 1, 1.0, "huggingface.co/ByteDance/Hyper-SD",
           "TCDScheduler, num_inference_steps=1, guidance_scale=0, eta=1.0; 'Lower eta results in more detail for "
           "multi-steps inference'", gamma=1.0,
           note="The LoRA supports 1 to 8 steps: raise steps and lower gamma for more detail."),
    Preset("Hyper-SDXL 1-step UNet", LCM, 1, 1.0, "huggingface.co/ByteDance/Hyper-SD",
           "LCMScheduler, num_inference_steps=1, guidance_scale=0, timesteps=[800]", timesteps=(800,),
           config={"original_inference_steps": 1000}, note=LOW_START_NOTE),
    Preset("TCD-LoRA SD1.5 / SDXL", TCD, 4, 1.0, "huggingface.co/h1t/TCD-SD15-LoRA",
           "num_inference_steps=4, guidance_scale=0, eta=0.3; 'A value of 0.3 often yields good results'",
           gamma=0.3, note="The card recommends a higher gamma for more steps."),
    Preset("AnimateLCM", LCM, 6, 2.0, "huggingface.co/wangfuyun/AnimateLCM",
           "LCMScheduler.from_config(..., beta_schedule='linear'), guidance_scale=2.0, num_inference_steps=6",
           config={"beta_schedule": "linear"},
           note="Real CFG (the card's negative prompt matters). The official repository's own config uses "
                "original_inference_steps 100; the card's diffusers code keeps 50, as here."),
)

PRESETS_BY_NAME: Dict[str, Preset] = {preset.name: preset for preset in PRESETS}
