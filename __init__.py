"""ComfyUI-SVG2: Sparse VideoGen2 attention for ComfyUI's native Wan 2.1/2.2 and HunyuanVideo models."""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
