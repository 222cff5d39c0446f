"""The compile check builds triton's ASTSource in the form each triton version takes (3.2: constants and an
AttrsDescriptor; 3.3 and later: constexprs and a dict of attrs). Cheap: nothing is compiled."""
import inspect
from types import SimpleNamespace

import pytest

pytest.importorskip("triton")

from svg2_core.triton_kernels.compile_check import ast_source_arguments  # noqa: E402

KERNEL = SimpleNamespace(arg_names=["q_ptr", "out_ptr", "stride_q", "num_tokens", "scale", "count", "BLOCK",
                                    "gate_ptr"])
SIGNATURE = {"q_ptr": "*bf16", "out_ptr": "*fp32", "stride_q": "i32", "num_tokens": "i32", "scale": "fp32",
             "count": "i32", "BLOCK": "constexpr", "gate_ptr": "constexpr"}
CONSTEXPRS = {"BLOCK": 64, "gate_ptr": None}
ALIGNED = [0, 1, 2, 3]  # pointers and aligned integers; not scale, count or the constexprs


class FakeAttrsDescriptor:
    @classmethod
    def from_hints(cls, hints):
        return ("descriptor", hints)


def test_triton_3_3_and_later_take_constexprs_and_attrs_by_position():
    arguments = ast_source_arguments(KERNEL, SIGNATURE, CONSTEXPRS, {"self", "fn", "signature", "constexprs", "attrs"})
    assert arguments == {"signature": SIGNATURE, "constexprs": CONSTEXPRS,
                         "attrs": {(index,): [["tt.divisibility", 16]] for index in ALIGNED}}


def test_triton_3_2_takes_constants_a_signature_without_them_and_an_attrs_descriptor():
    arguments = ast_source_arguments(KERNEL, SIGNATURE, CONSTEXPRS, {"self", "fn", "signature", "constants", "attrs"},
                                     FakeAttrsDescriptor)
    assert arguments["signature"] == {name: kind for name, kind in SIGNATURE.items() if kind != "constexpr"}
    assert arguments["constants"] == CONSTEXPRS
    assert arguments["attrs"] == ("descriptor", {index: 16 for index in ALIGNED})


def test_an_unknown_ast_source_is_named():
    with pytest.raises(RuntimeError, match="ASTSource takes"):
        ast_source_arguments(KERNEL, SIGNATURE, CONSTEXPRS, {"self", "fn", "src"})


def test_the_installed_triton_builds_an_ast_source_from_them():
    """The branch the installed triton takes builds its ASTSource (no compile)."""
    from svg2_core.triton_kernels import attention, compile_check, launches
    from svg2_core.gpu_classes import class_for
    from triton.compiler import ASTSource

    launch = next(launch for launch in launches.production_launches(class_for(90, None))
                  if launch.kernel is attention._sparse_attention_kernel)
    constexprs = {**{param.name: param.default for param in getattr(launch.kernel, "params", [])
                     if param.is_constexpr and param.has_default}, **launch.constexprs}
    signature = launches.KernelLaunch("", launch.kernel, constexprs, launch.num_warps, launch.num_stages,
                                      launch.pointer_types).signature()
    source = compile_check._ast_source(launch.kernel, signature, constexprs)
    assert isinstance(source, ASTSource)
    uses_constexprs = "constexprs" in inspect.signature(ASTSource.__init__).parameters
    assert len(source.constants) == len(constexprs) if uses_constexprs else source.constants == constexprs
