"""K-quants (Q4_K_M, Q5_K_M, Q6_K) made by llama.cpp's own quantizer, from an F16 GGUF.

gguf-py has no K-quant encoders, and the ``_M`` mixes are llama.cpp's own recipe (which tensors get
more bits), so the quantizing is left to ``llama_model_quantize`` (through llama-cpp-python, the
runtime the tests already check our files against). A K-quant block holds 256 values of one row, so
every quantized matrix needs rows that are a whole number of 256-value blocks; llama.cpp would
quietly store such a tensor in another type, so the rows are checked before anything is written, and
the tensor types of the result are checked after.

llama-cpp-python is imported here and not through :mod:`codette.backends`: exporting may not
depend on the serving stage.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gguf

from codette.errors import CodetteError

log = logging.getLogger(__name__)

Q = gguf.GGMLQuantizationType
QK_K = 256  # values per K-quant block


@dataclass(frozen=True)
class KQuant:
    main_type: gguf.GGMLQuantizationType  # the type most matrices get
    file_type: gguf.LlamaFileType
    llama_ftype: str  # the llama_cpp constant


KQUANTS: dict[str, KQuant] = {
    "q4_k_m": KQuant(Q.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_M, "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
    "q5_k_m": KQuant(Q.Q5_K, gguf.LlamaFileType.MOSTLY_Q5_K_M, "LLAMA_FTYPE_MOSTLY_Q5_K_M"),
    "q6_k": KQuant(Q.Q6_K, gguf.LlamaFileType.MOSTLY_Q6_K, "LLAMA_FTYPE_MOSTLY_Q6_K"),
}
# The types llama.cpp's K mixes use (the _M mixes give some matrices Q6_K, or Q5_K/Q6_K).
K_TYPES = frozenset({Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K})
_LOGGER = "llama-cpp-python"  # the logger llama-cpp-python passes llama.cpp's messages through


def import_llama_cpp() -> ModuleType:
    """``import llama_cpp``, or a one-line error that says how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise CodetteError(f"--quant q4_k_m/q5_k_m/q6_k needs llama-cpp-python ({exc}): run `make install-llama` "
                           "(see docs/DEPLOYMENT.md), or export f16/q8_0/q4_0, which need nothing more") from None
    return llama_cpp


def misfit_rows(rows: dict[str, int], block: int) -> dict[str, int]:
    """The matrices (name -> row length) whose rows are not a whole number of ``block``-value blocks."""
    return {name: n for name, n in rows.items() if n % block}


def check_rows(quant: str, rows: dict[str, int], fitting: list[str]) -> None:
    """Refuse ``quant`` before writing anything when a matrix row is not whole 256-value blocks."""
    bad = misfit_rows(rows, QK_K)
    if not bad:
        return
    lengths = sorted(set(bad.values()))
    first = ", ".join(f"{name} ({n})" for name, n in list(bad.items())[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise CodetteError(
        f"--quant {quant} needs every matrix row to be a multiple of {QK_K} values, but this model has rows of "
        f"{', '.join(map(str, lengths))} ({first}{more}); d_model and the FFN width must be multiples of {QK_K}. "
        f"Quant types that fit this model: {', '.join(fitting)}")


@contextlib.contextmanager
def _quiet_llama_cpp() -> Iterator[None]:
    """llama.cpp logs a line per tensor while quantizing; keep its errors only."""
    logger = logging.getLogger(_LOGGER)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def quantize(f16_path: Path, out_path: Path, quant: str) -> None:
    """Quantize the F16 GGUF ``f16_path`` to ``quant`` at ``out_path`` with llama.cpp's quantizer."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, KQUANTS[quant].llama_ftype)
    with _quiet_llama_cpp():
        rc = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(out_path).encode(), params)
    if rc != 0:
        raise CodetteError(f"llama.cpp could not quantize {f16_path.name} to {quant} (llama_model_quantize "
                           f"returned {rc}; its error is above)")


def check_types(path: Path, quant: str, quantized: list[str]) -> None:
    """Every matrix llama.cpp was asked to quantize must now be a K type: report any it stored otherwise."""
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    other = {name: types[name].name for name in quantized if types.get(name) not in K_TYPES}
    if other:
        listed = ", ".join(f"{name} as {t}" for name, t in list(other.items())[:4])
        raise CodetteError(f"llama.cpp did not store every matrix as a K-quant for {quant}: {listed}"
                           f"{' and more' if len(other) > 4 else ''}; no file was written")
