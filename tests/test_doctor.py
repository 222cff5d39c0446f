"""`python -m svg2_core.doctor`: with --arch it compiles every launch of a GPU class at the class's shared-memory
limit (exit 0 when all fit, 1 otherwise); without a GPU and without --arch it says so and suggests --arch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from svg2_core import doctor

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


@pytest.mark.skipif(not PTXAS.exists(), reason=f"this triton wheel has no ptxas at {PTXAS}")
def test_every_launch_fits_an_rtx_3090():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "svg2_core.doctor", "--arch", "8.6"], env=env,
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    launches = [line for line in lines if line.startswith(("ok", "over", "FAIL"))]
    assert len(launches) > 30 and all(line.startswith("ok   sm_86 ") for line in launches), result.stdout
    assert all(line.endswith("of 101,376 B") for line in launches)
    attention = [line for line in launches if " attention hd128 int8 main 128x64x8x3 first-tile max" in line]
    assert len(attention) == 1 and "P V fp16 accumulate" in attention[0]
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
