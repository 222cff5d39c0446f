"""The compile check on this machine (ptxas from the triton wheel): a block over a class's shared-memory limit is
reported, and sm_90's attention launch needs what it needed when its tiles were measured on the H200. The
doctor (`python -m svg2_core.doctor --arch ...`, tests/test_doctor.py and .ci/run) compiles every launch per
GPU class."""
from triton_helpers import needs_ptxas, run_compiled


@needs_ptxas
def test_a_block_over_the_shared_memory_limit_is_seen_on_the_cpu():
    """A 256-row bf16 query tile needs more shared memory than sm_90 gives a block (the GPU refuses it with
    OutOfResources); the compile reports it. sm_90's int8 first-tile-max main tiles need 180,224 B."""
    code = (
        "from svg2_core.triton_kernels.compile_check import compile_kernel\n"
        "from svg2_core.triton_kernels import attention\n"
        "constexprs = dict(HEAD_DIM=128, BLOCK_M=256, BLOCK_N=128, QK_INT8=False, UPCAST=False)\n"
        "kernel = attention._sparse_attention_kernel\n"
        "print('bf16 256 rows:', compile_kernel(kernel, constexprs, 8, 3, 90).metadata.shared)\n"
        "print('int8 128 rows:', compile_kernel(attention._sparse_attention_kernel, "
        "dict(constexprs, BLOCK_M=128, QK_INT8=True, FIRST_TILE_MAX=True), 8, 3, 90, "
        "{'q_ptr': '*i8', 'k_ptr': '*i8'}).metadata.shared)\n")
    result = run_compiled("-c", code, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    over = int(result.stdout.split("bf16 256 rows:")[1].split()[0])
    assert over > 232_448, result.stdout
    assert "int8 128 rows: 180224" in result.stdout, result.stdout
