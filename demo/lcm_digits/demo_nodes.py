"""The demo's nodes: the embedded digit model as MODEL, digit CONDITIONING, LATENT <-> IMAGE.

Not part of the LCM Multistep pack: this folder is a custom-node folder of its own, for the demo.
The nodes load only the committed weights in models/ (no folder_paths, nothing to download).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from . import model as digits

CATEGORY = "lcm_digits_demo"
ALL_DIGITS = "0-9"  # a batch of ten contexts, 0 to 9: one per latent of a batch of ten
DIGIT_CHOICES = [str(d) for d in range(digits.NUM_DIGITS)] + ["none", ALL_DIGITS]


class DigitsModelLoader:
    DESCRIPTION = (
        "Loads the demo's tiny digit diffusion model (an SD1.5-family UNet of 1.4M parameters trained on "
        "scikit-learn's 8x8 digits, committed in this folder) as a MODEL. student: LCM-distilled, for 1-8 "
        "LCM steps at cfg 1 (the teacher's CFG scale 4 is distilled in). teacher: the epsilon model it was "
        "distilled from, for ordinary samplers (e.g. 20-50 steps) with cfg about 4 and a 'none' negative. "
        "flow_student / flow_teacher: the same UNet as a flow-matching model (ComfyUI's CONST, shift 5 as "
        "ModelSamplingSD3 sets it): a rectified-flow teacher (euler, cfg about 2) and its student distilled to "
        "4 steps on fixed timesteps (sigmas 1, 0.9375, 0.8333, 0.625: FlowMatchLCMTimesteps with sigmas "
        "'1.0, 0.75, 0.5, 0.25', LCMSampler, cfg 1). Use EmptyLatentImage 32x32 (a 4x4 latent) and Digits Decode.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The digit UNet on ComfyUI's own model classes: epsilon prediction on SD1.5's noise schedule "
                       "(student, teacher) or flow matching with shift 5 (flow_*); latent scale factor 1.0.",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {"model": (list(digits.UNET_FILES), {
            "default": "student",
            "tooltip": "student: the LCM (few steps, cfg 1). teacher: the epsilon model (many steps, CFG). "
                       "flow_student: the 4-step flow distillation (cfg 1). flow_teacher: the rectified-flow "
                       "model (many steps, CFG)."})}}

    def load(self, model: str) -> Tuple[Any]:
        import comfy.model_management
        import comfy.model_patcher

        base = digits.load_unet_model(model)
        patcher = comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                                   offload_device=comfy.model_management.unet_offload_device())
        return (patcher,)


class DigitsConditioning:
    DESCRIPTION = (
        "CONDITIONING for one digit: its row of the model's learned class-embedding table, as a one-token "
        "cross-attention context. 'none' is the null row the teacher was trained with for classifier-free "
        "guidance: use it as the negative, or as the positive for 'any digit'.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Positive or negative conditioning for the digit model (student and teacher share it).",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {"digit": (DIGIT_CHOICES, {
            "default": "7", "tooltip": "The digit to draw, 0-9; 'none' = no digit (the unconditional row); "
                                        "'0-9' = a batch of ten, one digit per latent (EmptyLatentImage "
                                        "batch_size 10)."})}}

    def encode(self, digit: str) -> Tuple[Any]:
        if digit not in DIGIT_CHOICES:
            raise ValueError(f"DigitsConditioning digit={digit!r}: expected one of {DIGIT_CHOICES}")
        if digit == ALL_DIGITS:
            rows = torch.arange(digits.NUM_DIGITS)
        else:
            rows = torch.tensor([digits.NULL_ROW if digit == "none" else int(digit)])
        context = digits.context_for(rows, digits.class_embedding()).clone()
        return ([[context, {}]],)


class DigitsDecode:
    DESCRIPTION = (
        "Turns a digit LATENT (B, 4, 4, 4) into an IMAGE: the inverse of the loss-free packing "
        "(pixel_shuffle, 4 channels -> 2x2 pixels), grey in [0, 1], enlarged with nearest neighbour so it is "
        "visible. There is no VAE: the latent channels are the pixels.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("(B, 8*scale, 8*scale, 3) grey images in [0, 1] for a 4x4 latent.",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "A LATENT from the digit model (4 channels)."}),
            "scale": ("INT", {"default": 8, "min": 1, "max": 128,
                              "tooltip": "Nearest-neighbour enlargement: 8 turns the 8x8 digit into 64x64."}),
        }}

    def decode(self, samples: Dict[str, Any], scale: int) -> Tuple[torch.Tensor]:
        latents = samples["samples"]
        if latents.ndim != 4 or latents.shape[1] != digits.LATENT_CHANNELS:
            raise ValueError(f"DigitsDecode samples: shape {tuple(latents.shape)}, expected (B, 4, H, W) from the "
                             "digit model (EmptyLatentImage 32x32 gives a 4x4 latent)")
        grey = (digits.unpack(latents.detach().float().cpu()).clamp(-1.0, 1.0) + 1.0) / 2.0
        grey = torch.nn.functional.interpolate(grey, scale_factor=int(scale), mode="nearest")
        return (grey.movedim(1, -1).expand(-1, -1, -1, 3).contiguous(),)


class DigitsEncode:
    DESCRIPTION = (
        "Turns an IMAGE into a digit LATENT (for img2img through images): grey (mean of R, G, B), averaged "
        "down to 8x8, scaled to [-1, 1] and packed into 4x4x4. The inverse of Digits Decode.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("A (B, 4, 4, 4) LATENT for the digit model.",)

    @classmethod
    def INPUT_TYPES(cls) -> Dict[str, Any]:
        return {"required": {"pixels": ("IMAGE", {"tooltip": "Images, any size (e.g. Digits Decode's output); a "
                                                            "light digit on a dark background, as the data."})}}

    def encode(self, pixels: torch.Tensor) -> Tuple[Dict[str, torch.Tensor]]:
        grey = pixels.detach().float().cpu()[..., :3].mean(-1, keepdim=True).movedim(-1, 1)
        small = torch.nn.functional.adaptive_avg_pool2d(grey, digits.IMAGE_SIZE)
        return ({"samples": digits.pack(small * 2.0 - 1.0)},)


NODE_CLASS_MAPPINGS = {
    "DigitsModelLoader": DigitsModelLoader,
    "DigitsConditioning": DigitsConditioning,
    "DigitsDecode": DigitsDecode,
    "DigitsEncode": DigitsEncode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "DigitsModelLoader": "Load Digit Model (LCM demo)",
    "DigitsConditioning": "Digit Conditioning (LCM demo)",
    "DigitsDecode": "Digits Decode (LCM demo)",
    "DigitsEncode": "Digits Encode (LCM demo)",
}
