"""LCM Multistep: a ComfyUI custom-node pack. This file only registers the nodes.

The scheduler itself is ``lcm_core`` (torch + numpy only), usable without ComfyUI.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
