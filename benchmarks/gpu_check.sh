#!/usr/bin/env bash
# The GPU check: the GPU tests, then the library bench at the model shapes, results as JSON.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR [BENCH_ARGS...]]  # RESULTS_DIR default: $OUT, else bench-out
#   bash benchmarks/gpu_check.sh out --gpu-class 8.9 --pv-accumulate fp16   # act as an RTX 40xx on this GPU
#
# BENCH_ARGS go to every bench; --gpu-class C also runs the GPU tests as class C (SVG2_GPU_CLASS).
#
# Writes into RESULTS_DIR:
#   environment.json           GPU, driver, capability, torch, triton, commit, GPU class acted as
#   doctor.txt                 python -m svg2_core.doctor: tiles, compiles and one sparse call on this GPU
#   gpu_tests.json             pytest of tests/gpu and tests/test_triton_*.py: exit status, passed / failed /
#                              skipped / errors, names of the failures (the log is gpu_tests.txt)
#   bench_wan21-1.3b-480p.json Wan 2.1 1.3B 480p, scores in bf16 (what the node runs below 50,000 tokens) at
#                              ~15% and ~30% density
#   bench_wan21-14b-720p.json  Wan 2.1 14B 720p, int8 scores (the node's setting there) at top_p 0.6246 /
#                              0.8745 (~15% / ~30% density), with --profile
#   bench_hunyuan-720p.json    HunyuanVideo 720p (+256 text tokens), int8 scores, ~15% and ~30% density
# each with the printed table beside it (.txt). Optional peers get bench rows where they can be imported:
# SageAttention 1 (a sageattention-*.whl in $SVG2_WHEELS, default .whl/, is installed into a private folder
# without network or dependencies) and comfy-kitchen's sol_attn ($SVG2_WHEELS/comfy_kitchen.zip).
# Environment: PYTHON (default python3), SVG2_WHEELS. Exit status: pytest's, else the first failing bench's.
set -u
cd "$(dirname "$0")/.."
RESULTS=${1:-${OUT:-bench-out}}
BENCH_ARGS=("${@:2}")
for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
    [ "${BENCH_ARGS[$i]}" = "--gpu-class" ] && export SVG2_GPU_CLASS="${BENCH_ARGS[$((i + 1))]}"
done
PYTHON=${PYTHON:-python3}
WHEELS=${SVG2_WHEELS:-.whl}
mkdir -p "$RESULTS"
SITE=$(mktemp -d)
for wheel in "$WHEELS"/sageattention-*.whl; do
    [ -f "$wheel" ] && "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" "$wheel"
done
SOL_TAU=()
if [ -f "$WHEELS/comfy_kitchen.zip" ]; then
    "$PYTHON" -m zipfile -e "$WHEELS/comfy_kitchen.zip" "$SITE" && SOL_TAU=(--sol-tau 0.5 1.0 2.0 4.0)
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - "$RESULTS/environment.json" <<'EOF'
import json, subprocess, sys
import torch, triton
info = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}
from svg2_core.gpu_classes import gpu_class
info["gpu_class"] = gpu_class().describe()
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name()
    info["capability"] = list(torch.cuda.get_device_capability())
    props = torch.cuda.get_device_properties(0)
    info["sm_count"] = props.multi_processor_count
    info["memory_gib"] = round(props.total_memory / 2**30, 1)
try:
    info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip()
except OSError:
    info["driver"] = None
info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(info)
EOF

"$PYTHON" -m svg2_core.doctor > "$RESULTS/doctor.txt" 2>&1; tail -1 "$RESULTS/doctor.txt"
"$PYTHON" -m pytest -q tests/gpu tests/test_triton_*.py --junitxml="$RESULTS/gpu_tests.xml" \
    > "$RESULTS/gpu_tests.txt" 2>&1
TESTS_STATUS=$?
tail -3 "$RESULTS/gpu_tests.txt"
"$PYTHON" - "$RESULTS/gpu_tests.xml" "$RESULTS/gpu_tests.json" "$TESTS_STATUS" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
suites = ET.parse(sys.argv[1]).getroot()
suites = [suites] if suites.tag == "testsuite" else list(suites)
counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
failed = [f"{case.get('classname')}.{case.get('name')}" for s in suites for case in s.iter("testcase")
          if case.find("failure") is not None or case.find("error") is not None]
counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
json.dump(dict(exit_status=int(sys.argv[3]), **counts, failed=failed), open(sys.argv[2], "w"), indent=1)
EOF

BENCH_STATUS=0
bench() {  # bench NAME ARGS...: one bench run, JSON and the printed table under $RESULTS
    local name=$1; shift
    "$PYTHON" -m svg2_core.bench --peakedness 4 --rows-per-head 128 --shape "$name" "$@" "${BENCH_ARGS[@]}" \
        --json "$RESULTS/bench_$name.json" > "$RESULTS/bench_$name.txt" 2>&1 || {
        echo "bench $name failed (see $RESULTS/bench_$name.txt)"; [ $BENCH_STATUS = 0 ] && BENCH_STATUS=1; }
    grep -E "^==|SVG2|SDPA|SageAttention|sol_attn|^vs|^no row" "$RESULTS/bench_$name.txt"
}
bench wan21-1.3b-480p --qk input --top-p --density 0.15 0.30 --sol-tau
bench wan21-14b-720p --qk int8 --top-p 0.6246 0.8745 "${SOL_TAU[@]}" --profile
bench hunyuan-720p --qk int8 --top-p --density 0.15 0.30 --sol-tau
rm -rf "$SITE"
[ $TESTS_STATUS != 0 ] && exit $TESTS_STATUS
exit $BENCH_STATUS
