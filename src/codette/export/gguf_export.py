"""Checkpoint -> GGUF for llama.cpp and Ollama, written by gguf-py and streamed tensor by tensor.

The header (metadata and tensor table) is written first from shapes alone; then each tensor is
computed from the memory-mapped checkpoint, converted (block formats by ``gguf.quants.quantize``)
and appended, and its source pages are released, so at most one converted tensor is in memory at a
time. Norms, biases and other 1-D tensors stay F32
(as llama.cpp's own converter does); a matrix whose rows are not a whole number of quantization
blocks falls back to F16, with a warning naming it.

K-quants (``q4_k_m``, ``q5_k_m``, ``q6_k``) are made by llama.cpp's own quantizer from an F16 file
written this way (:mod:`codette.export.kquant`); a model whose rows do not fit them is refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch

from codette.errors import CodetteError
from codette.export.arch import WEIGHT, TensorPlan, add_arch_metadata, plan_tensors, resolve_arch
from codette.export.files import atomic_path, refuse_existing, scratch_path
from codette.export.gguf_vocab import GGUFVocab, add_tokenizer_metadata, gguf_vocab
from codette.export.kquant import KQUANTS, check_rows, check_types, import_llama_cpp, misfit_rows, quantize
from codette.export.modelfile import modelfile_target, write_modelfile
from codette.export.source import ExportSource, open_checkpoint
from codette.tokenizer.bpe import TOKENIZER_FILE

log = logging.getLogger(__name__)

Q = gguf.GGMLQuantizationType
# --quant value -> (tensor type of matrices, general.file_type)
QUANT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
DEFAULT_QUANT = "f16"
QUANT_CHOICES = [*QUANT_TYPES, *KQUANTS]  # the first written by gguf-py, the K-quants by llama.cpp


@dataclass
class GGUFExport:
    """What was written, for the CLI report and the tests."""

    path: Path
    modelfile: Path | None
    arch: str
    quant: str
    n_tensors: int
    n_bytes: int
    seconds: float  # converting, writing (and for K-quants llama.cpp's quantizing), including the fsyncs
    write_seconds: float  # writing the gguf-py file (F16 for K-quants) without the fsync (disk speed)
    fallbacks: list[str] = field(default_factory=list)
    context_length: int = 0  # the model's trained context (the Modelfile's num_ctx; llama.cpp's --n_ctx)
    modelfile_kept: Path | None = None  # a Modelfile of another GGUF, left as it was (see modelfile_target)

    @property
    def mb_per_s(self) -> float:
        return self.n_bytes / 1e6 / max(self.seconds, 1e-9)


def check_quant(quant: str) -> str:
    q = str(quant).lower()
    if q not in QUANT_CHOICES:
        raise CodetteError(f"unknown quant type {quant!r}; choose one of: {', '.join(QUANT_CHOICES)}")
    return q


def fitting_quants(rows: dict[str, int]) -> list[str]:
    """The quant types that store every matrix as asked (no F16 fallback, no refusal) for these rows."""
    blocks = {q: gguf.GGML_QUANT_SIZES[t][0] for q, (t, _) in QUANT_TYPES.items()}
    blocks.update({q: gguf.GGML_QUANT_SIZES[k.main_type][0] for q, k in KQUANTS.items()})
    return [q for q in QUANT_CHOICES if not misfit_rows(rows, blocks[q])]


def gguf_file_name(preset: str, quant: str) -> str:
    return f"codette_{preset}-{quant}.gguf"


def tensor_type(plan: TensorPlan, target: gguf.GGMLQuantizationType,
                logits_tensor: str = "output.weight") -> tuple[gguf.GGMLQuantizationType, bool]:
    """Storage type of one tensor and whether it fell back to F16 (rows not a multiple of the block).

    Like llama.cpp's quantizer, the matrix that produces the logits (``output.weight``, or the tied
    ``token_embd.weight``) keeps more precision than Q4_0: Q8_0 (gguf-py has no Q6_K quantizer). On the
    test models this lifts Q4_0 top-1 agreement from 88% to 93% for a few percent more bytes.
    """
    if plan.kind != WEIGHT or len(plan.shape) < 2 or target == Q.F32:
        return Q.F32, False
    if target == Q.Q4_0 and plan.name == logits_tensor:
        target = Q.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[target]
    if plan.shape[-1] % block:
        return Q.F16, True
    return target, False


def encode(data: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """A float32 tensor as the bytes of ``qtype``.

    Block formats (Q8_0, Q4_0) go through gguf-py's quantizers. Plain casts to F16/BF16 are done by
    torch, several times faster than NumPy's and bit-identical to gguf-py's (round to nearest even;
    a test checks).
    """
    data = data.contiguous()
    if qtype == Q.F32:
        return data.numpy()
    if qtype == Q.F16:
        return data.to(torch.float16).numpy()
    if qtype == Q.BF16:
        return data.to(torch.bfloat16).view(torch.int16).numpy()
    return gguf.quants.quantize(data.numpy(), qtype)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Casting is memory-bound: one thread already outruns the disk, and on a shared CPU more threads
    mostly wait on each other (measured: 560 vs 240-390 MB/s for the 350M benchmark on 2 busy cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape[:-1]) * (shape[-1] // block) * size


def _general_metadata(writer: gguf.GGUFWriter, src: ExportSource, arch: str, quant: str, label: str) -> None:
    cfg = src.cfg
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"Codette {src.preset}")
    writer.add_basename("codette")
    step = f", trained {src.step} steps" if src.step is not None else ""
    writer.add_description(f"Codette {src.preset}: {cfg.block_style}-style blocks as GGUF {arch}{step}, {label}")
    writer.add_file_type(QUANT_TYPES[quant][1])  # llama.cpp's quantizer sets its own when it rewrites the file
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_gguf(src: ExportSource, vocab: GGUFVocab, plans: list[TensorPlan], arch: str, quant: str, label: str,
                tmp: Path) -> tuple[list[str], float]:
    """Write the GGUF of ``quant`` (a gguf-py type) to ``tmp``; returns (F16 fallbacks, seconds before the fsync)."""
    target_type = QUANT_TYPES[quant][0]
    writer = gguf.GGUFWriter(path=None, arch=arch)
    _general_metadata(writer, src, arch, quant, label)
    add_arch_metadata(writer, arch, src.cfg)
    add_tokenizer_metadata(writer, vocab)

    types: list[gguf.GGMLQuantizationType] = []
    fallbacks: list[str] = []
    logits_tensor = "token_embd.weight" if src.cfg.tie_embeddings else "output.weight"
    for p in plans:
        qtype, fell_back = tensor_type(p, target_type, logits_tensor)
        if fell_back:
            fallbacks.append(p.name)
            log.warning("%s: row length %d is not a multiple of the %s block size %d; stored as F16",
                        p.name, p.shape[-1], target_type.name, gguf.GGML_QUANT_SIZES[target_type][0])
        types.append(qtype)
        writer.add_tensor_info(p.name, p.shape, np.dtype(np.float32), _nbytes(p.shape, qtype), raw_dtype=qtype)

    t0 = time.perf_counter()
    with _one_torch_thread():
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for p, qtype in zip(plans, types, strict=True):
                data = p.load()
                if tuple(data.shape) != p.shape:  # pragma: no cover - guarded by check_weights
                    raise AssertionError(f"{p.name}: computed shape {tuple(data.shape)} != planned {p.shape}")
                writer.write_tensor_data(encode(data, qtype))
                del data
                if p.source is not None:
                    src.release(p.source)
            write_seconds = time.perf_counter() - t0
            writer.flush()
            os.fsync(writer.fout[0].fileno())
        finally:
            writer.close()
    return fallbacks, write_seconds


def tokenizer_vocab(src: ExportSource) -> GGUFVocab:
    """The GGUF vocabulary of the tokenizer beside the checkpoint; one that llama.cpp cannot reproduce is an
    error naming the tokenizer file, raised before anything is written."""
    try:
        return gguf_vocab(src.tokenizer, src.cfg.vocab_size)
    except CodetteError as exc:
        raise CodetteError(f"{src.path.parent / TOKENIZER_FILE}: {exc}") from None


def export_gguf(
    checkpoint: Path | str,
    out_dir: Path | str | None = None,
    quant: str = DEFAULT_QUANT,
    force: bool = False,
    arch: str | None = None,
    modelfile: bool = True,
    system: str | None = None,
) -> GGUFExport:
    """Write ``<out_dir>/codette_<preset>-<quant>.gguf`` (and a ``Modelfile``) from ``checkpoint``.

    The Modelfile is ``Modelfile``, or ``Modelfile.<quant>`` when ``Modelfile`` is another GGUF's
    (:func:`~codette.export.modelfile.modelfile_target`); ``force`` never replaces another GGUF's Modelfile.
    """
    quant = check_quant(quant)
    src = open_checkpoint(checkpoint)
    arch = resolve_arch(src.cfg, arch)
    vocab = tokenizer_vocab(src)
    out = Path(out_dir) if out_dir is not None else src.path.parent
    path = out / gguf_file_name(src.preset, quant)
    mf_path, mf_kept = modelfile_target(out, path.name, quant) if modelfile else (None, None)
    refuse_existing([path] + ([mf_path] if mf_path else []), force)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # gguf-py logs an endianness banner at INFO

    plans = plan_tensors(src, arch)
    t0 = time.perf_counter()
    if quant in KQUANTS:
        matrices = [p for p in plans if p.kind == WEIGHT and len(p.shape) >= 2]
        rows = {p.name: p.shape[-1] for p in matrices}
        check_rows(quant, rows, fitting_quants(rows))
        import_llama_cpp()  # a missing llama-cpp-python is reported before anything is written
        with atomic_path(path) as tmp, scratch_path(path) as f16:
            fallbacks, write_seconds = _write_gguf(src, vocab, plans, arch, "f16", quant, f16)
            quantize(f16, tmp, quant)
            check_types(tmp, quant, [p.name for p in matrices])
    else:
        with atomic_path(path) as tmp:
            fallbacks, write_seconds = _write_gguf(src, vocab, plans, arch, quant, quant, tmp)
    seconds = time.perf_counter() - t0
    n_bytes = path.stat().st_size
    log.info("wrote %s (%s, %s, %d tensors, %.1f MB in %.2f s, %.2f s before fsync)", path, arch, quant, len(plans),
             n_bytes / 1e6, seconds, write_seconds)
    if mf_path is not None:
        write_modelfile(mf_path, path.name, num_ctx=src.cfg.max_seq_len, system=system)
    return GGUFExport(path=path, modelfile=mf_path, arch=arch, quant=quant, n_tensors=len(plans), n_bytes=n_bytes,
                      seconds=seconds, write_seconds=write_seconds, fallbacks=fallbacks,
                      context_length=src.cfg.max_seq_len, modelfile_kept=mf_kept)


__all__ = ["DEFAULT_QUANT", "QUANT_CHOICES", "GGUFExport", "QUANT_TYPES", "check_quant", "export_gguf",
           "fitting_quants", "gguf_file_name"]
