"""Package contracts: svg2_core imports on its own and never imports ComfyUI; requirements never pull torch."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_svg2_core_imports_without_comfyui():
    code = "import sys, svg2_core; print(sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'nodes', 'server')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_svg2_core_sources_never_reference_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|comfy_extras|folder_paths|server|nodes)\b", re.M)
    offenders = [path.name for path in (ROOT / "svg2_core").rglob("*.py") if pattern.search(path.read_text())]
    assert offenders == []


def test_requirements_do_not_install_torch_and_install_triton_only_on_linux():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = [re.split(r"[<>=;\s\[]", line)[0].lower() for line in lines if line]
    assert "torch" not in names and "torchvision" not in names
    assert any(line.startswith("triton") and 'sys_platform == "linux"' in line for line in lines)
    # triton-windows must match the user's torch: the README gives the command per torch version
    assert not any(line.startswith("triton-windows") for line in lines)


def _load_as_comfyui_does(folder: Path):
    """Import `folder` the way ComfyUI loads a custom node: its __init__.py as a package named by its path."""
    import importlib.util

    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_comfyui_loads_the_pack_from_a_folder_named_like_the_readme(tmp_path):
    folder = tmp_path / "ComfyUI-SVG2"
    folder.mkdir()
    for name in ("__init__.py", "nodes", "svg2_core", "web"):
        (folder / name).symlink_to(ROOT / name)
    pack = _load_as_comfyui_does(folder)
    assert "SVG2SparseAttention" in pack.NODE_CLASS_MAPPINGS and pack.WEB_DIRECTORY == "./web"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["SVG2SparseAttention"] == "SVG2 Sparse Attention"


def test_pytest_runs_in_a_folder_named_like_the_readme(tmp_path):
    """pytest imports the repository root's __init__.py as a lone module when the folder's name is not an
    identifier; the pack's relative import must not break collection then."""
    folder = tmp_path / "ComfyUI-SVG2"
    (folder / "tests").mkdir(parents=True)
    for name in ("__init__.py", "nodes", "svg2_core", "pyproject.toml"):
        (folder / name).symlink_to(ROOT / name)
    (folder / "tests" / "test_probe.py").write_text("def test_probe():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
