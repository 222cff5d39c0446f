"""A headless ComfyUI server (`main.py --cpu`) for tests: custom node folders linked into a temporary root,
model folders registered through extra_model_paths.yaml, started on a free port and stopped afterwards."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(comfyui: Path, root: Path, custom_nodes: dict[str, Path], model_folders: tuple[str, ...] = (),
                   real_frontend: bool = False, start_timeout_s: float = 120.0):
    """Yields `(base_url, log_path)` of a server rooted in `root`.

    custom_nodes: folder name -> path, linked into `root/custom_nodes`. model_folders: ComfyUI folder names
    (`diffusion_models`, `vae`, ...) served from `root/<name>`. Input, output and user data live in `root`;
    without `real_frontend` an empty front-end root is served (no comfyui-frontend-package needed).
    """
    for folder in ("custom_nodes", "input", "output", "user", "frontend", *model_folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, path in custom_nodes.items():
        (root / "custom_nodes" / name).symlink_to(path, target_is_directory=True)
    folders = "".join(f"  {name}: {name}\n" for name in model_folders)
    (root / "extra_model_paths.yaml").write_text(
        f"svg2_test:\n  base_path: {root}\n  custom_nodes: custom_nodes\n{folders}")
    command = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(_free_port()), "--extra-model-paths-config", str(root / "extra_model_paths.yaml"),
               "--output-directory", str(root / "output"), "--input-directory", str(root / "input"),
               "--user-directory", str(root / "user"), "--database-url", "sqlite:///:memory:",
               "--disable-api-nodes"]
    if not real_frontend:
        command += ["--front-end-root", str(root / "frontend")]
    url = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + start_timeout_s
            while True:
                try:
                    get_json(url + "/system_stats", timeout=2)
                    break
                except OSError:
                    if process.poll() is not None or time.time() > deadline:
                        raise RuntimeError("ComfyUI did not start:\n" + log_path.read_text()[-4000:])
                    time.sleep(0.5)
            yield url, log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            for name in custom_nodes:
                (root / "custom_nodes" / name).unlink()
