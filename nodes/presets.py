"""Scheduler settings of the few-step model families, each as its official model card gives them.

Every value below is quoted from the family's official model card or inference code (the
``source`` and ``quote`` of each preset); nothing unsourced is a preset. The 2023-24 cards are
diffusers code: ``guidance_scale`` there is classifier-free guidance for LoRAs (diffusers runs
CFG only above 1, so the cards' 0 means no CFG: ComfyUI's cfg 1.0) and the embedded w for
full LCM UNets (also cfg 1.0 in ComfyUI: the guidance is inside the UNet, set on
LCMUNetLoader). ``original_inference_steps`` is raised for presets whose card lists
timesteps off the 50-step LCM grid (DMD2, Hyper-SDXL 1-step): it only decides which
timesteps count as on the grid (no warning for the card's own list), never the sampling.

The flow-matching presets (Wan, Qwen-Image) give their sigmas in ComfyUI's CONST sigma space
(sigma in [0, 1], the model's timestep sigma * 1000), which is the authors' own sigma: each is
worked out from the authors' code as the comment beside it says, and tests/test_presets.py checks
it against the numbers quoted from that code or against diffusers. The authors' Euler and DDIM
recipes name ComfyUI's own sampler (``euler``; ``ddim``, which ComfyUI runs as Euler: the same
step as DDIM with eta 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

LCM = "lcm"
TCD = "tcd"
FLOW_LCM = "flow_lcm"  # the pack's LCMSampler on a flow model: x0, then fresh noise at the next sigma
COMFY_SAMPLERS = ("euler", "ddim")  # ComfyUI's own samplers (comfy.samplers.sampler_object)

# ComfyUI model classes (comfy.model_base) a preset is made for. ComfyUI runs Wan 2.1 and Wan 2.2 A14B
# (T2V and I2V) as one class, WAN21, so a check cannot tell them apart; WAN22 is Wan 2.2 TI2V-5B.
WAN = ("WAN21",)
QWEN_IMAGE = ("QwenImage",)
SD15_SDXL = ("BaseModel", "SDXL")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One family's settings: which scheduler, how many steps, the cfg to use in ComfyUI, and where
    each value comes from."""

    name: str
    scheduler: str  # LCM, TCD (diffusers' LCMScheduler, TCDScheduler), FLOW_LCM, or one of COMFY_SAMPLERS
    steps: int
    cfg: float  # ComfyUI's cfg for the sampler (1.0: no CFG pass)
    source: str
    quote: str  # the card's own line(s) that give the values
    gamma: Optional[float] = None  # TCD's gamma, diffusers' eta
    timesteps: Tuple[int, ...] = ()  # the card's fixed timesteps, when it passes timesteps=[...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # LCMConfig fields the card sets
    note: str = ""
    sigmas: Tuple[float, ...] = ()  # a flow preset's sigmas (ComfyUI's CONST sigma space), before the final 0
    families: Tuple[str, ...] = ()  # ComfyUI model classes it is made for (checked when a model is connected)

    @property
    def is_flow(self) -> bool:
        return bool(self.sigmas)

    @property
    def fixed_steps(self) -> int:
        """The step count of a preset with a fixed schedule (its timesteps or sigmas); 0 when steps may vary."""
        return len(self.sigmas) or len(self.timesteps)

    def about(self) -> str:
        """One paragraph for the node's `about` output: what the preset runs and its source."""
        if self.scheduler not in (LCM, TCD):
            return self._about_recipe()
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

    def _about_recipe(self) -> str:
        if self.scheduler == FLOW_LCM:
            how = "the pack's flow LCM step (LCMSampler: x0, then fresh noise at the next sigma; none after the last)"
        else:
            how = f"ComfyUI's {self.scheduler} sampler"
        if self.is_flow:
            schedule = f"flow sigmas {', '.join(f'{s:.6g}' for s in self.sigmas)}, 0"
        else:
            schedule = (f"timesteps {', '.join(map(str, self.timesteps))} on the model's own sigma table, ending at "
                        "t = 0's sigma")
        text = f"{self.name}: {how}, {schedule}, cfg {self.cfg:g}. Source: {self.source} ({self.quote})."
        return f"{text} {self.note}".strip()


LCM_LORA_QUOTE = "num_inference_steps=4, guidance_scale=0; 'reduce the number of inference steps to just 2 to 8'"
FULL_LCM_NOTE = ("A full LCM UNet: load it with LCMUNetLoader, whose guidance_scale goes into the UNet (set it to "
                 "the card's 8.0; the loader's default is diffusers' pipeline default, 8.5); the sampler's cfg "
                 "stays 1.")

# diffusers' txt2img pipelines hand the UNet unit-variance noise at whatever timestep the list starts
# with; ComfyUI scales an empty latent's noise by that timestep's sigma (sqrt(1 + sigma^2) only at
# the top of the schedule), so below t = 999 the two start from differently scaled noise.
LOW_START_NOTE = ("The card's schedule starts below t = 999: ComfyUI starts txt2img from noise scaled by that "
                  "timestep's sigma, diffusers from unit-variance noise, so here the images are not diffusers' "
                  "to the seed.")

HYPER_SD_SOURCE = "huggingface.co/ByteDance/Hyper-SD"
HYPER_SD_NOTE = ("DDIM (eta 0) is an Euler step in ComfyUI's sigma space, so ComfyUI's ddim sampler runs it. The "
                 "SD1.5 and SDXL scheduler configs set set_alpha_to_one false, so diffusers' last step ends at "
                 "t = 0's noise level, not at 0, as the sigmas here do; diffusers' latent is this one times "
                 "sqrt(alpha_bar_0) = 0.99957.")
# LightX2V's WanStepDistillScheduler (scheduler.py) maps its distill config to sigmas so:
#   sigmas = linspace(1, 0, 1001)[:-1]; sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
#   sigmas = sigmas[[1000 - t for t in denoising_step_list]]; the model's timestep is sigma * 1000,
# i.e. sigma = shift(t / 1000): the list is in timesteps 0..1000 and is shifted, ComfyUI's sigma directly.
# With [1000, 750, 500, 250] and shift 5: 1.0, 0.9375, 0.8333333, 0.625 (timesteps 1000, 937.5, 833.33, 625).
LIGHTX2V_SIGMAS = (1.0, 0.9375, 0.8333333, 0.625)
LIGHTX2V_QUOTE = ("configs/distill/wan_t2v_distill_4step_cfg.json: denoising_step_list [1000, 750, 500, 250], "
                  "sample_shift 5, enable_cfg false; set_denoising_timesteps: sigmas linspace(1, 0, 1001)[:-1] "
                  "shifted by sample_shift, indexed by 1000 - t")
LIGHTX2V_LCM_SOURCE = ("github.com/ModelTC/LightX2V@2df627236d5cc4449e7defa6a3cc0caef3e2212a "
                       "lightx2v/models/schedulers/wan/step_distill/scheduler.py")
LIGHTX2V_EULER_SOURCE = ("github.com/ModelTC/LightX2V@f8aee98b5462cca8d7288888146ebd95592bf266 "
                         "lightx2v/models/schedulers/wan/step_distill/scheduler.py")
LIGHTX2V_NOTE = ("For the lightx2v Wan2.1 T2V / I2V StepDistill-CfgDistill models and LoRAs: LightX2V's scheduler "
                 "re-noised with fresh noise (LCM) when they were released (2025-07) and its docs still say "
                 "'LCM Scheduler is already fixed in use'; its code steps Euler-style since 2025-11-24 (the "
                 "Euler preset). Sigmas are fixed: the model's shift does not change them.")
WAN22_LIGHTNING_SOURCE = ("github.com/ModelTC/Wan2.2-Lightning@92efeb4442a90d8f1985a486a0f33afd12dfeacf "
                          "wan/utils/fm_solvers_euler.py, wan/configs/wan_t2v_A14B.py, generate.py")
CAUSVID_SOURCE = ("github.com/tianweiy/CausVid@ca2115039172dfa3a02deee1534408a09680f29f "
                  "configs/wan_bidirectional_dmd_from_scratch.yaml, causvid/models/wan/bidirectional_inference.py")
RCM_SOURCE = "github.com/NVlabs/rcm@5b41aa92c493d0627df8651996a04196e9de186f rcm/inference/wan2pt1_t2v_rcm_infer.py"
QWEN_LIGHTNING_SOURCE = ("github.com/ModelTC/Qwen-Image-Lightning@25d1e9935ba97e1f60503f8c000201e08b1fe8f4 "
                         "generate_with_diffusers.py, README.md")
# base_shift = max_shift = log 3 makes QwenImagePipeline's mu log 3 at every size, and the exponential
# time shift with mu = log 3 is a static shift 3 of its sigmas linspace(1, 1/n, n) (float32 in diffusers).
QWEN_LIGHTNING_NOTE = ("The card's config makes mu log 3 at every image size, so the sigmas are linspace(1, 1/n, n) "
                       "shifted by 3 whatever the size. For the Qwen-Image LoRAs (V1.x / V2.0); the Edit LoRAs use "
                       "the same scheduler config.")

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
    *(Preset(f"Hyper-SD {n}-step LoRA SD1.5 / SDXL (DDIM)", "ddim", n, 1.0, HYPER_SD_SOURCE,
             f"DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing='trailing'), "
             f"num_inference_steps={n}, guidance_scale=0", timesteps=timesteps, families=SD15_SDXL,
             note=HYPER_SD_NOTE)
      for n, timesteps in ((2, (999, 499)), (4, (999, 749, 499, 249)), (8, (999, 874, 749, 624, 499, 374, 249, 124)))),
    Preset("lightx2v Wan2.1 StepDistill-CfgDistill 4-step (LCM)", FLOW_LCM, 4, 1.0, LIGHTX2V_LCM_SOURCE,
           LIGHTX2V_QUOTE + "; step_post: x0 = x - sigma * flow_pred, then add_noise(x0, randn, sigmas[i + 1]) "
           "except on the last step", sigmas=LIGHTX2V_SIGMAS, families=WAN, note=LIGHTX2V_NOTE),
    Preset("lightx2v Wan2.1 StepDistill-CfgDistill 4-step (Euler, LightX2V since 2025-11)", "euler", 4, 1.0,
           LIGHTX2V_EULER_SOURCE,
           LIGHTX2V_QUOTE + "; step_post: x0 = x - sigma * flow_pred, then x0 + flow_pred * sigma_n except on the "
           "last step", sigmas=LIGHTX2V_SIGMAS, families=WAN,
           note="The same sigmas as the LCM preset; LightX2V's scheduler has stepped this way (Euler) since "
                "commit 753a494 (2025-11-24)."),
    Preset("Wan2.2-Lightning / lightx2v Wan2.2 4-step (Euler)", "euler", 4, 1.0, WAN22_LIGHTNING_SOURCE,
           "EulerScheduler: timesteps np.linspace(1000, 0, steps + 1), sigmas shift * s / (1 + (shift - 1) * s); "
           "sample_steps = 4, sample_shift = 5.0, sample_guide_scale = (1.0, 1.0); 'Please use euler solver "
           "because it's used in distillation'", sigmas=LIGHTX2V_SIGMAS, families=WAN,
           note="Wan 2.2 A14B has two models: the high-noise one runs the first 2 steps (t >= boundary 875 for T2V, "
                "900 for I2V: 1000 and 937.5), the low-noise one the last 2 (SplitSigmas at step 2, or "
                "KSamplerAdvanced steps 0-2 and 2-4). LightX2V's own Wan2.2 distill configs "
                "(configs/distill/wan22/*.json: denoising_step_list [1000, 750, 500, 250], sample_shift 5.0, "
                "boundary_step_index 2, Wan22StepDistillScheduler) give the same sigmas and step."),
    Preset("CausVid Wan2.1 bidirectional 3-step (LCM)", FLOW_LCM, 3, 1.0, CAUSVID_SOURCE,
           "denoising_step_list: [1000, 757, 522], timestep_shift: 8.0, warp_denoising_step: false; "
           "FlowMatchScheduler(shift=8.0, sigma_min=0.0, extra_one_step=True).set_timesteps(1000); "
           "x0 from the nearest table sigma, then scheduler.add_noise(x0, randn_like, next_timestep)",
           sigmas=(1.0, 0.75675672, 0.52173913), families=WAN,
           note="Each sigma is the shift-8 table's entry nearest the listed timestep (the table the authors' "
                "add_noise and x0 conversion look up); their model is fed the integer timestep (757, 522), "
                "ComfyUI's sigma * 1000 (756.76, 521.74). For the bidirectional checkpoints (and LoRAs made from "
                "them); the autoregressive model needs the authors' causal loop."),
    Preset("rCM Wan2.1 T2V 4-step (LCM)", FLOW_LCM, 4, 1.0, RCM_SOURCE,
           "mid_t = [1.5, 1.4, 1.0][: args.num_steps - 1]; t_steps = [atan(sigma_max), *mid_t, 0] with sigma_max 80; "
           "t_steps = sin(t) / (cos(t) + sin(t)); x = (1 - t_next) * (x - t_cur * v_pred) + t_next * randn",
           sigmas=(0.98765432, 0.93378106, 0.85289539, 0.60897905), families=WAN,
           note="The authors start from noise * 80/81 (not pure noise): on an empty latent ComfyUI's first "
                "sigma does the same. Their script also runs 1 to 3 steps (mid_t cut to steps - 1)."),
    *(Preset(f"Qwen-Image-Lightning {n}-step (Euler)", "euler", n, 1.0, QWEN_LIGHTNING_SOURCE,
             f"FlowMatchEulerDiscreteScheduler.from_config(base_shift=math.log(3), max_shift=math.log(3), "
             f"time_shift_type='exponential', use_dynamic_shifting=True, shift_terminal=None, ...); "
             f"--steps {n} --cfg 1.0", sigmas=sigmas, families=QWEN_IMAGE, note=QWEN_LIGHTNING_NOTE)
      for n, sigmas in ((8, (1.0, 0.9545455, 0.9, 0.8333334, 0.75, 0.6428571, 0.5, 0.3)),
                        (4, (1.0, 0.9, 0.75, 0.5)))),
)

PRESETS_BY_NAME: Dict[str, Preset] = {preset.name: preset for preset in PRESETS}
