"""The tiny digit LCM: data packing, the UNet built through ComfyUI's own classes, the classifier.

Shared by the demo nodes (demo_nodes.py) and the training script (demo/train_digits.py). It
holds no training code. ComfyUI must be importable (`comfy` on sys.path) when a model is built;
importing this module only needs torch and numpy.

Data: scikit-learn's 8x8 digits (UCI ML hand-written digits; pixel values 0..16), scaled to
[-1, 1] and packed loss-free into a 4x4x4 "latent" with pixel_unshuffle(2): latent channel
2*i + j holds the pixels (2y + i, 2x + j). There is no VAE; the packing is the "autoencoder".

UNet: ComfyUI's SD1.5-family `openaimodel.UNetModel` at reduced width, built by
`comfy.supported_models.SD15(unet_config).get_model(...)` (a subclass that only swaps the latent
format), so ComfyUI runs it natively: epsilon prediction, SD's scaled_linear schedule (beta
0.00085..0.012, 1000 steps). The class condition is cross-attention: a learned table of 11 rows
(digits 0-9, then the null row for the unconditional branch of CFG) whose row is the context,
one token of CONTEXT_DIM channels.

The flow pair (FLOW_KINDS, demo/train_flow_digits.py) is the same UNet run by ComfyUI as a flow
model (DigitsFlow: CONST over ModelSamplingDiscreteFlow, shift FLOW_SHIFT), with the same table.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

MODELS_DIR = Path(__file__).resolve().parent / "models"

# Weight files under models/ (safetensors, fp16 storage, fp32 compute).
TEACHER_FILE = "digits_teacher_unet.safetensors"
STUDENT_FILE = "digits_lcm_student_unet.safetensors"
EMBEDDING_FILE = "digits_class_embedding.safetensors"
CLASSIFIER_FILE = "digits_classifier.safetensors"
# The flow-matching pair (demo/train_flow_digits.py): a rectified-flow teacher and its 4-step student,
# on the same UNet and the same (frozen) class-embedding table as the epsilon pair above.
FLOW_TEACHER_FILE = "digits_flow_teacher_unet.safetensors"
FLOW_STUDENT_FILE = "digits_flow_student_unet.safetensors"
UNET_FILES = {"student": STUDENT_FILE, "teacher": TEACHER_FILE,
              "flow_student": FLOW_STUDENT_FILE, "flow_teacher": FLOW_TEACHER_FILE}
FLOW_KINDS = ("flow_student", "flow_teacher")
EMBEDDING_KEY = "class_embedding.weight"

# The flow models' timestep shift, sigma' = s sigma / (1 + (s - 1) sigma), carried by their ComfyUI
# model sampling (what ModelSamplingSD3 sets). 5.0 is the sample_shift of LightX2V's Wan2.1 4-step
# distillation, and with it the student's training grid below is the one both LightX2V (Wan2.1,
# denoising_step_list [1000, 750, 500, 250]) and Wan2.2-Lightning ([1000, 937.5, 833.33, 625]) use,
# so the question "does sampling on the training timesteps matter?" is asked on their grid.
FLOW_SHIFT = 5.0
# The student's training timesteps before the shift: LightX2V's denoising_step_list / 1000.
FLOW_TRAINING_GRID = (1.0, 0.75, 0.5, 0.25)
# The teacher's CFG scale distilled into the flow student (which then runs at cfg 1).
FLOW_GUIDANCE = 2.0

NUM_DIGITS = 10
NULL_ROW = NUM_DIGITS  # the 11th row: "no digit", the unconditional branch of CFG
IMAGE_SIZE = 8  # sklearn digits are 8x8
PACK = 2  # pixel_unshuffle factor: 8x8x1 -> 4x4x4
LATENT_SIZE = IMAGE_SIZE // PACK
LATENT_CHANNELS = PACK * PACK
# ComfyUI's EmptyLatentImage makes a (width / 8) x (height / 8) latent: 32 x 32 gives 4 x 4.
PIXELS_PER_LATENT = 8
CONTEXT_DIM = 64

# ComfyUI's names (what comfy.model_detection would report for this network), reduced width:
# two levels of 64 channels (4x4 and 2x2), one res block each; a transformer block (self- and
# cross-attention) at the 2x2 level and in the middle, none at 4x4 (it cost a third of the step
# time on 2 CPU cores). SD15 adds num_heads 8 (unet_extra_config). 1.43M parameters.
# Why 64 channels at 4x4: ComfyUI's GroupNorm has 32 groups, so at 32 channels every group is one
# channel over 16 pixels; that student stayed at noise after 1 LCM step (classifier accuracy 0.3),
# where 64 channels reached 0.7 in the same time. 128 channels at 2x2 would exceed the 10 MB budget.
UNET_CONFIG: Dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": LATENT_SIZE,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "model_channels": 64,
    "num_res_blocks": [1, 1],
    "transformer_depth": [0, 1],
    "transformer_depth_output": [0, 0, 1, 1],
    "channel_mult": [1, 1],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": CONTEXT_DIM,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


# The fixed held-out split: HELD_OUT digits chosen by a seeded permutation of all 1,797, never
# trained on by any model (teacher, student or classifier); the rest (1,297) is the training set.
HELD_OUT = 500
SPLIT_SEED = 20231006  # the LCM paper's arXiv date; any fixed number would do


def pixels_from_digits(values: torch.Tensor) -> torch.Tensor:
    """sklearn digit pixels (0..16, any shape) -> float32 in [-1, 1]."""
    return values.to(torch.float32) / 8.0 - 1.0


def digit_split() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels); images (N, 1, 8, 8) in [-1, 1].

    scikit-learn's bundled copy of the UCI ML hand-written digits (no download).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = pixels_from_digits(torch.from_numpy(data.images)).unsqueeze(1)
    labels = torch.from_numpy(data.target).to(torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    held, train = order[:HELD_OUT], order[HELD_OUT:]
    return images[train], labels[train], images[held], labels[held]


def pack(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 8, 8) images in [-1, 1] -> (B, 4, 4, 4) latents, loss-free (pixel_unshuffle)."""
    return torch.nn.functional.pixel_unshuffle(images, PACK)


def unpack(latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) latents -> (B, 1, 2h, 2w) images (pixel_shuffle), the inverse of pack()."""
    return torch.nn.functional.pixel_shuffle(latents, PACK)


@functools.lru_cache(maxsize=None)
def _comfy_classes() -> Any:
    """DigitsLatentFormat and DigitsSD15, defined on first use so that importing this module
    does not import ComfyUI (the training script puts ComfyUI on sys.path first)."""
    import comfy.latent_formats
    import comfy.supported_models

    class DigitsLatentFormat(comfy.latent_formats.LatentFormat):
        """scale_factor 1.0: ComfyUI's LATENT is the packed data latent itself.

        BaseModel.process_latent_in / process_latent_out multiply / divide by scale_factor
        (SD1.5's is 0.18215, which would shrink our unit-range data by 5.5x before sampling).
        The preview unpacks the latent to the 8x8 grey image (its 4 channels are pixels).
        """

        scale_factor = 1.0
        latent_channels = LATENT_CHANNELS
        latent_rgb_factors = [[1.0, 1.0, 1.0]]  # one grey channel after unpacking -> R, G, B
        latent_rgb_factors_reshape = staticmethod(unpack)

    class DigitsSD15(comfy.supported_models.SD15):
        """SD1.5's model class (schedule, epsilon prediction, UNet family) with the digits' latent format."""

        latent_format = DigitsLatentFormat

    return DigitsLatentFormat, DigitsSD15


def latent_format_class() -> Any:
    return _comfy_classes()[0]


@functools.lru_cache(maxsize=None)
def _flow_class() -> Any:
    import comfy.model_base

    class DigitsFlow(_comfy_classes()[1]):
        """The same UNet as a flow-matching model: ComfyUI's CONST over ModelSamplingDiscreteFlow (what
        ModelSamplingSD3 installs), velocity v = noise - x0, model time = sigma * 1000, shift FLOW_SHIFT."""

        sampling_settings = {"shift": FLOW_SHIFT, "multiplier": 1000}

        def model_type(self, state_dict: Any, prefix: str = "") -> Any:
            return comfy.model_base.ModelType.FLOW

    return DigitsFlow


def shifted(sigma: float, shift: float = FLOW_SHIFT) -> float:
    """The static timestep shift (SD3, Esser et al. 2024; ComfyUI's time_snr_shift)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_training_sigmas() -> Tuple[float, ...]:
    """The student's four training sigmas: FLOW_TRAINING_GRID shifted by FLOW_SHIFT (1, 0.9375, 0.8333, 0.625)."""
    return tuple(shifted(s) for s in FLOW_TRAINING_GRID)


def build_unet_model(device: Optional[torch.device] = None, flow: bool = False) -> Any:
    """A ComfyUI BaseModel (fp32, weights NOT initialised: ComfyUI disables init) for UNET_CONFIG:
    epsilon prediction on SD1.5's schedule, or (flow=True) the flow-matching DigitsFlow."""
    # A deep copy: UNetModel.__init__ pops from the transformer_depth lists it is given.
    model_config = (_flow_class() if flow else _comfy_classes()[1])(copy.deepcopy(UNET_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    return model_config.get_model({}, "", device=device or torch.device("cpu"))


@functools.lru_cache(maxsize=None)
def load_weights(file_name: str) -> Dict[str, torch.Tensor]:
    """A committed weight file as float32 tensors on the CPU (cached; callers must not modify them)."""
    from safetensors.torch import load_file

    path = MODELS_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the demo's weights are committed under demo/lcm_digits/models "
                                "(or write them with demo/train_digits.py --out)")
    return {key: value.to(torch.float32) for key, value in load_file(str(path)).items()}


def load_unet_model(kind: str = "student", weights: Optional[Dict[str, torch.Tensor]] = None) -> Any:
    """The trained UNet (a kind of UNET_FILES) as a ComfyUI BaseModel, eval mode, no grad; the flow
    kinds are flow-matching models."""
    if kind not in UNET_FILES:
        raise ValueError(f"model kind {kind!r}: expected one of {sorted(UNET_FILES)}")
    if weights is None:
        weights = load_weights(UNET_FILES[kind])
    model = build_unet_model(flow=kind in FLOW_KINDS)
    # strict: every parameter comes from the file (ComfyUI would leave a missing one uninitialised).
    model.diffusion_model.load_state_dict(weights, strict=True)
    model.diffusion_model.eval().requires_grad_(False)
    return model


def class_embedding(weights: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """The (11, CONTEXT_DIM) conditioning table: rows 0-9 the digits, row 10 the null condition."""
    table = (weights if weights is not None else load_weights(EMBEDDING_FILE))[EMBEDDING_KEY]
    if tuple(table.shape) != (NUM_DIGITS + 1, CONTEXT_DIM):
        raise ValueError(f"class embedding has shape {tuple(table.shape)}, expected {(NUM_DIGITS + 1, CONTEXT_DIM)}")
    return table


def context_for(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Cross-attention context (B, 1, CONTEXT_DIM) for table rows (B,): one token per sample."""
    return table[rows].unsqueeze(1)


class DigitClassifier(torch.nn.Module):
    """A small CNN on 8x8 digits in [-1, 1]; its 128-d penultimate activations are the FD feature space."""

    FEATURES = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),  # 4x4
            torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),  # 2x2
            torch.nn.Flatten(),
            torch.nn.Linear(128 * 4, self.FEATURES), torch.nn.ReLU(),
        )
        self.dropout = torch.nn.Dropout(0.3)
        self.head = torch.nn.Linear(self.FEATURES, NUM_DIGITS)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def load_classifier(weights: Optional[Dict[str, torch.Tensor]] = None) -> DigitClassifier:
    classifier = DigitClassifier()
    classifier.load_state_dict(weights if weights is not None else load_weights(CLASSIFIER_FILE), strict=True)
    return classifier.eval().requires_grad_(False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of two feature sets (rows are samples), the quality metric of the demo:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017), in float64.

    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues) of the symmetric S_a^(1/2) S_b S_a^(1/2).
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)
