"""Fixtures for the ComfyUI integration tests: skipped unless COMFYUI_PATH names a ComfyUI checkout."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import comfy_env  # noqa: E402

SKIP_REASON = ("COMFYUI_PATH is not set: the ComfyUI integration tests need a ComfyUI checkout and its venv "
               "(../shared/tools/comfyui-dev.sh builds one; run with COMFYUI_PATH=... $COMFYUI_PYTHON -m pytest)")


@pytest.fixture(scope="session")
def comfyui():
    """ComfyUI's `nodes` module, imported in-process in CPU mode."""
    path = comfy_env.comfyui_path()
    if path is None:
        pytest.skip(SKIP_REASON)
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={path} has no main.py")
    try:
        return comfy_env.import_comfyui(path)
    except ImportError as error:
        pytest.skip(f"ComfyUI at {path} does not import in this Python ({error}); use its venv")


@pytest.fixture(scope="session")
def pack():
    return comfy_env.load_pack()


@pytest.fixture(scope="session")
def checkpoints(comfyui, tmp_path_factory):
    """name -> file name of a tiny checkpoint in a registered diffusion_models folder."""
    import folder_paths

    directory = tmp_path_factory.mktemp("diffusion_models")
    folder_paths.add_model_folder_path("diffusion_models", str(directory), is_default=True)
    return {name: comfy_env.build_checkpoint(name, directory).name for name in comfy_env.TINY_MODELS}


@pytest.fixture(scope="session")
def load_model(comfyui, checkpoints):
    """name -> a freshly loaded ModelPatcher through the real UNETLoader."""
    def load(name):
        return comfyui.UNETLoader().load_unet(checkpoints[name], "default")[0]
    return load
