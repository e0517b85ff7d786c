"""The pack's ComfyUI nodes: thin glue from widgets to lcm_core and the host's sampling API."""

from . import ksampler_names
from .config_node import LCMSchedulerConfig
from .flow_timesteps_node import FlowMatchLCMTimesteps
from .lcm_unet import LCMGuidanceEmbedding, LCMUNetLoader
from .preset_node import LCMPreset
from .sampler import LCMSampler, TCDSampler
from .timesteps_node import LCMTimesteps

# Node ids are stable: saved workflows refer to them.
NODE_CLASS_MAPPINGS = {
    "LCMSchedulerConfig": LCMSchedulerConfig,
    "LCMTimesteps": LCMTimesteps,
    "LCMSampler": LCMSampler,
    "LCMUNetLoader": LCMUNetLoader,
    "LCMGuidanceEmbedding": LCMGuidanceEmbedding,
    "TCDSampler": TCDSampler,
    "LCMPreset": LCMPreset,
    "FlowMatchLCMTimesteps": FlowMatchLCMTimesteps,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LCMSchedulerConfig": "LCM Scheduler Config",
    "LCMTimesteps": "LCM Timesteps",
    "LCMSampler": "LCM Sampler (multistep)",
    "LCMUNetLoader": "Load LCM UNet (guidance embedding)",
    "LCMGuidanceEmbedding": "LCM Guidance Embedding (set w)",
    "TCDSampler": "TCD Sampler (gamma)",
    "LCMPreset": "LCM / TCD Preset (model family)",
    "FlowMatchLCMTimesteps": "FlowMatch LCM Timesteps",
}

# The exact samplers and the LCM timesteps in the plain KSampler's lists (a no-op outside ComfyUI).
KSAMPLER_REGISTRATION = ksampler_names.register()
