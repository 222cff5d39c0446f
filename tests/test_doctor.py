"""`python -m svg2_core.doctor`: with --arch it compiles every launch of a GPU class at the class's shared-memory
limit (exit 0 when all fit, 1 otherwise); without a GPU and without --arch it says so and suggests --arch."""
import torch
from triton_helpers import needs_ptxas, run_compiled

from svg2_core import doctor


@needs_ptxas
def test_every_launch_fits_an_rtx_3090():
    result = run_compiled("-m", "svg2_core.doctor", "--arch", "8.6", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    launches = [line for line in lines if line.startswith(("ok", "over", "FAIL"))]
    assert len(launches) > 30 and all(line.startswith("ok   sm_86 ") for line in launches), result.stdout
    assert all(line.endswith("of 101,376 B") for line in launches)
    attention = [line for line in launches if " attention hd128 int8 main 128x64x8x3 first-tile max" in line]
    # fp16 P V for GeForce cards, fp32 for the workstation cards of the class
    assert len(attention) == 2 and {"P V fp16 accumulate" in line for line in attention} == {True, False}
    assert any(line.startswith("ok   sm_86 retry attention") for line in launches)
    assert "0 over the limit or failed" in lines[-1]


def test_without_a_gpu_it_says_so_and_suggests_arch(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert doctor.main([]) == 2
    out = capsys.readouterr().out
    assert "No CUDA GPU" in out and "--arch 8.9" in out


def test_a_class_it_does_not_know_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert doctor.main(["--arch", "7.5"]) == 2
    assert "8.0 or newer" in capsys.readouterr().err


PROFILE_ATTENTION_89 = """
import json, sys
from svg2_core.gpu_classes import CLASSES
from svg2_core.triton_kernels.compile_check import compile_launch, loop_profile
from svg2_core.triton_kernels.launches import production_launches
launches = {launch.name: launch for launch in production_launches(CLASSES[89], head_dims=(128,))}
profiles = {}
for pv in ("fp16", "fp32"):
    profile = loop_profile(compile_launch(launches[f"attention hd128 int8 main 128x64x8x3 first-tile max, P V {pv} accumulate"], 89))
    profiles[pv] = dict(registers=profile.registers, instructions=profile.loop_instructions, opcodes=profile.loop_opcodes,
                        mma=profile.mma_counts(), line=profile.describe())
json.dump(profiles, sys.stdout)
"""


@needs_ptxas
def test_sass_profile_counts_the_key_tile_loop_of_the_attention():
    """--sass: the hottest loop of the 8.9 int8 attention (128 x 64 key tiles, 8 warps, head dim 128) is one key
    tile: per warp 128 x 64 x 128 / 8 / (16 x 8 x 16) = 64 fp16 / bf16 MMAs (P V) and 64 x 128 x 128 / 8 /
    (16 x 8 x 32) = 32 int8 MMAs (scores), whichever accumulation; fp16 accumulation adds its conversions.
    Compiled in a process of its own (the suite's kernels run interpreted)."""
    import json

    result = run_compiled("-c", PROFILE_ATTENTION_89, timeout=600)
    assert result.returncode == 0, result.stderr
    profiles = json.loads(result.stdout)
    for profile in profiles.values():
        assert profile["mma"] == {"HMMA": 64, "IMMA": 32}, profile
        assert 0 < profile["registers"] <= 255 and profile["instructions"] > 96
        assert "hottest loop" in profile["line"] and "(64 HMMA, 32 IMMA)" in profile["line"]
    assert profiles["fp16"]["opcodes"].get("HADD2", 0) > profiles["fp32"]["opcodes"].get("HADD2", 0)


def test_sass_profile_parses_nested_loops():
    """The inner loop (closing first) wins a tie in MMAs; a loop without MMAs loses to one with them."""
    from svg2_core.triton_kernels.compile_check import parse_loop_profile

    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
        /*0020*/               @P0 BRA 0x10 ;
        /*0030*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0040*/                   FADD R5, R5, R6 ;
        /*0050*/              @!P1 BRA 0x30 ;
        /*0060*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0070*/               @P2 BRA 0x30 ;
        /*0080*/                   EXIT ;
    """
    profile = parse_loop_profile(sass, "Function k: REG:40 STACK:16 SHARED:0")
    assert (profile.registers, profile.stack_bytes, profile.loop_instructions) == (40, 16, 3)
    assert profile.mma_counts() == {"HMMA": 1} and profile.loop_opcodes == {"HMMA": 1, "FADD": 1, "BRA": 1}
