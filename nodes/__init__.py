"""Node modules of the pack: each one's NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS are merged here."""
from importlib import import_module

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}


def _register(module_name: str) -> None:
    module = import_module(f".{module_name}", __name__)
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)


_register("svg2_patch")
_register("compare")
_register("raylight")
