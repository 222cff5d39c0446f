#!/usr/bin/env bash
# The browser test of the web extension: headless Debian chromium + playwright-core against a real ComfyUI
# (COMFYUI_PATH, with comfyui-frontend-package in its Python) and a tiny random Wan model. Writes
# docs/svg2-node.png. Needs: apt-get install -y chromium; node + npm.
#   COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/python] tests/browser/run.sh [pytest args]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
: "${COMFYUI_PATH:?set COMFYUI_PATH to a ComfyUI checkout}"
python="${COMFYUI_PYTHON:-$COMFYUI_PATH/../venv/bin/python}"
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
cd "$repo"
COMFYUI_PATH="$COMFYUI_PATH" COMFYUI_PYTHON="$python" SVG2_SCREENSHOT="${SVG2_SCREENSHOT:-$repo/docs/svg2-node.png}" \
  exec "$python" -m pytest "$here/test_svg2_browser.py" -q "$@"
