"""Importing llama-cpp-python, with a warning for builds that crash on this CPU.

llama-cpp-python builds llama.cpp from source, by default for the build machine's CPU
(``GGML_NATIVE=ON``). On an Intel Xeon with AMX that compiles llama.cpp's AMX kernels, and its
quantised (Q8_0/Q4_0) paths then die with "Illegal instruction". ``make install-llama`` (and
``make install-dev``/``make test``) build it portably; a user who brings their own build is warned
once, with the fix.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import ModuleType

from codette.errors import CodetteError

log = logging.getLogger(__name__)

PORTABLE_FIX = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF '
    '-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install --no-cache-dir --force-reinstall llama-cpp-python'
)
_AMX_FEATURE = re.compile(r"\bAMX\w*\s*=\s*1\b")
_warned = False


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU reports AMX tiles (Linux; False where /proc/cpuinfo is unreadable)."""
    try:
        return "amx_tile" in cpuinfo.read_text(errors="replace").split()
    except OSError:
        return False


def library_has_amx(system_info: str) -> bool:
    """True when llama.cpp's system info lists compiled-in AMX kernels (``AMX_INT8 = 1``, ...)."""
    return bool(_AMX_FEATURE.search(system_info))


def import_llama_cpp() -> ModuleType:
    """``import llama_cpp``, with a clear error when it is missing and a one-time AMX warning."""
    global _warned
    try:
        import llama_cpp
    except ImportError as exc:
        raise CodetteError(f"running a GGUF needs llama.cpp's runtime, llama-cpp-python, which is not installed "
                           f"({exc}): run `make install-llama` (it compiles llama.cpp once, for a portable instruction "
                           f"set; without make see docs/DEPLOYMENT.md)") from None
    if not _warned:
        _warned = True
        info = llama_cpp.llama_print_system_info()
        info = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
        if library_has_amx(info) and cpu_has_amx():
            log.warning("the installed llama-cpp-python was built with llama.cpp's AMX kernels, which crash "
                        "quantised GGUFs with 'Illegal instruction' on this CPU; rebuild it portably: %s",
                        PORTABLE_FIX)
    return llama_cpp
