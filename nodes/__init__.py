"""The pack's ComfyUI nodes: thin glue from widgets to lcm_core and the host's sampling API."""

from .config_node import LCMSchedulerConfig
from .lcm_unet import LCMGuidanceEmbedding, LCMUNetLoader
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
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LCMSchedulerConfig": "LCM Scheduler Config",
    "LCMTimesteps": "LCM Timesteps",
    "LCMSampler": "LCM Sampler (multistep)",
    "LCMUNetLoader": "Load LCM UNet (guidance embedding)",
    "LCMGuidanceEmbedding": "LCM Guidance Embedding (set w)",
    "TCDSampler": "TCD Sampler (gamma)",
}
