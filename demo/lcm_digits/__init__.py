"""LCM digits demo: a custom-node folder of its own, NOT part of the LCM Multistep pack.

A tiny LCM trained on scikit-learn's 8x8 digits (demo/train_digits.py), embedded in models/, so
that the pack's nodes show real pictures in a demo. ComfyUI loads this folder when it is linked
into custom_nodes/ (e.g. as custom_nodes/lcm-digits-demo). Importing it costs nothing but torch.
"""

from .demo_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
