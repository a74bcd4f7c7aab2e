"""The installed llama.cpp runtime is portable: no AMX (or AVX-512) code, whatever CPU built it.

A llama-cpp-python built with llama.cpp's default ``GGML_NATIVE=ON`` on an Intel Xeon with AMX
carries AMX kernels that crash quantised GGUFs there ("Illegal instruction" at ``tileloadd``). On
an AMD machine the same build would pass every other test (its CPU has no AMX, so the kernels are
never compiled or never reached), so the check reads the library's machine code, not its behaviour.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from codette.backends import llama_runtime
from tests._runtimes import require

llama_cpp = require("llama_cpp")

AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tilerelease", "tilezero", "tileloadd", "tileloaddt1", "tilestored",
                 "tdpbf16ps", "tdpfp16ps", "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud")
_AMX = re.compile(r"\s(" + "|".join(AMX_MNEMONICS) + r")\s")
_ZMM = re.compile(r"%zmm\d+")


def _cpu_libraries() -> list[Path]:
    libs = sorted(Path(llama_cpp.__file__).parent.rglob("libggml-cpu*.so*"))
    if not libs:  # older layouts link the CPU backend into libggml.so / libllama.so
        libs = sorted(Path(llama_cpp.__file__).parent.rglob("libggml*.so*"))
    assert libs, f"no libggml library found under {Path(llama_cpp.__file__).parent}"
    return libs


@pytest.fixture(scope="module")
def disassembly() -> dict[Path, str]:
    objdump = shutil.which("objdump")
    assert objdump, "objdump not found: install Debian's binutils (make test needs it to check the llama.cpp build)"
    return {lib: subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                                check=True).stdout for lib in _cpu_libraries()}


def test_cpu_backend_has_no_amx_instructions(disassembly: dict[Path, str]) -> None:
    for lib, text in disassembly.items():
        assert len(text) > 100_000, f"{lib}: objdump printed almost nothing"
        found = sorted(set(_AMX.findall(text)))
        assert not found, f"{lib} contains AMX instructions {found}: rebuild llama-cpp-python portably (make test does)"


def test_cpu_backend_has_no_avx512_instructions(disassembly: dict[Path, str]) -> None:
    """x86-64-v3 is the portable baseline: AVX-512 code would crash on CPUs without it."""
    for lib, text in disassembly.items():
        hits = len(_ZMM.findall(text))
        assert hits == 0, f"{lib} uses AVX-512 registers ({hits} times): it was built for the build machine's CPU"


def test_system_info_lists_no_amx() -> None:
    info = llama_cpp.llama_print_system_info()
    info = info.decode() if isinstance(info, bytes) else str(info)
    assert "AVX2 = 1" in info, info  # the portable baseline is really compiled in
    assert not llama_runtime.library_has_amx(info), info


def test_amx_feature_parsing() -> None:
    assert llama_runtime.library_has_amx("CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | OPENMP = 1 |")
    assert llama_runtime.library_has_amx("AVX512 = 1 | AMX_BF16 = 1")
    assert not llama_runtime.library_has_amx("CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 0 | OPENMP = 1 |")
    assert not llama_runtime.library_has_amx("CPU : SSE3 = 1 | AVX2 = 1 | FMA = 1 |")


def test_cpu_amx_detection(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("processor : 0\nflags : fpu avx2 fma\n")
    assert llama_runtime.cpu_has_amx(amx)
    assert not llama_runtime.cpu_has_amx(plain)
    assert not llama_runtime.cpu_has_amx(tmp_path / "missing")


@pytest.mark.parametrize(("lib_amx", "cpu_amx", "warns"), [(True, True, True), (True, False, False),
                                                           (False, True, False)])
def test_native_amx_build_warns_once_on_an_amx_cpu(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                   lib_amx: bool, cpu_amx: bool, warns: bool) -> None:
    info = b"CPU : AVX2 = 1 | AMX_INT8 = 1 |" if lib_amx else b"CPU : AVX2 = 1 |"
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info)
    monkeypatch.setattr(llama_runtime, "cpu_has_amx", lambda: cpu_amx)
    monkeypatch.setattr(llama_runtime, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=llama_runtime.__name__):
        assert llama_runtime.import_llama_cpp() is llama_cpp
        llama_runtime.import_llama_cpp()
    warnings = [r for r in caplog.records if "AMX" in r.getMessage()]
    assert len(warnings) == (1 if warns else 0)
    if warns:
        assert "GGML_NATIVE=OFF" in warnings[0].getMessage() and "--no-cache-dir" in warnings[0].getMessage()
