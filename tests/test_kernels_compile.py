"""Every production launch compiles for sm_90, and the tensor-core ones for sm_80, on this machine
(tests/compile_kernels.py), so a construct the CPU interpreter accepts but the GPU compiler refuses fails CI instead of a GPU run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


@pytest.mark.skipif(not PTXAS.exists(), reason=f"this triton wheel has no ptxas at {PTXAS}")
def test_every_kernel_compiles_for_hopper_and_ampere():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_kernels.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = int(result.stdout.splitlines()[-1].split()[0])  # "<count> launches checked"
    assert result.stdout.count("ok   ") == checked > 30, result.stdout


@pytest.mark.skipif(not PTXAS.exists(), reason=f"this triton wheel has no ptxas at {PTXAS}")
def test_a_block_over_the_shared_memory_limit_fails_the_check():
    """A 256-row bf16 query tile needs 256 KiB of shared memory (the GPU refuses it with OutOfResources); the
    compile check reports it on the CPU."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); from compile_kernels import compile_launch; from svg2_core.triton_kernels import attention\n"
        "constexprs = dict(HEAD_DIM=128, BLOCK_M=256, BLOCK_N=128, QK_INT8=False, UPCAST=False)\n"
        "try:\n    compile_launch(attention._sparse_attention_kernel, constexprs, 8, 3, 90)\n"
        "except RuntimeError as error:\n    print('refused:', error)\n"
        "print('int8 128 rows:', compile_launch(attention._sparse_attention_kernel, "
        "dict(constexprs, BLOCK_M=128, QK_INT8=True, FIRST_TILE_MAX=True), 8, 3, 90, "
        "{'q_ptr': '*i8', 'k_ptr': '*i8'}))\n")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused:" in result.stdout and "over the 232448 B a block may use" in result.stdout, result.stdout
    assert "int8 128 rows: 180224" in result.stdout, result.stdout
