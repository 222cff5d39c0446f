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


def test_requirements_do_not_install_torch_and_pick_triton_per_platform():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = [re.split(r"[<>=;\s\[]", line)[0].lower() for line in lines if line]
    assert "torch" not in names and "torchvision" not in names
    assert any(line.startswith("triton") and 'sys_platform == "linux"' in line for line in lines)
    assert any(line.startswith("triton-windows") and 'sys_platform == "win32"' in line for line in lines)
