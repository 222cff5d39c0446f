"""ComfyUI-SVG2: Sparse VideoGen2 attention for ComfyUI's native Wan 2.1/2.2 and HunyuanVideo models."""
if __package__:  # ComfyUI imports this folder as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a lone file, outside any package: pytest does this with the repository root when the
    # folder's name is not a Python identifier (ComfyUI-SVG2). There is no pack to register then.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
