"""GGUF export checked against the real runtime (llama-cpp-python), on models trained 300 steps.

Numbers measured on the 2-core CPU machine (see docs/DEPLOYMENT.md): F32 logits within ~5e-6 of
PyTorch for ``llama`` blocks and within ~2e-3 for ``codette`` blocks (llama.cpp evaluates GELU through
an fp16 lookup table); top-1 agreement F16/BF16 >= 99.6%, Q8_0 ~99%, Q4_0 ~93%.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from codette.cli.main import app
from codette.errors import CodetteError
from codette.export import export_gguf, read_gguf
from codette.export.arch import rope_halves_to_pairs
from codette.export.gguf_export import encode
from codette.export.gguf_vocab import GPT2_REGEX
from codette.export.kquant import KQUANTS
from codette.export.source import expected_shapes
from codette.tokenizer import CHAT_TEMPLATE, CONTROL_TOKENS, MARKER_TOKENS, SPECIAL_TOKENS, render
from tests._export_models import WIDE, WIDE_TRAIN, random_checkpoint, train_model
from tests._runtimes import require

llama_cpp = require("llama_cpp")

pytestmark = pytest.mark.slow
F32_KV = 0  # GGML_TYPE_F32 for llama.cpp's K/V cache (its default is F16)
PROMPTS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "Use your Newton perspective on a violin."}],
    [{"role": "system", "content": "You are Codette."}, {"role": "user", "content": "What is 12 times 7?"}],
    [{"role": "user", "content": "Give me a multi-perspective analysis of a glacier."}],
]


@pytest.fixture(scope="module")
def exported(trained_models, tmp_path_factory):
    """(model name, quant) -> GGUFExport, each written once per module."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("gguf")

    def get(name: str, quant: str):
        if (name, quant) not in cache:
            cache[name, quant] = export_gguf(trained_models[name].checkpoint, root / name, quant, modelfile=False)
        return cache[name, quant]

    return get


@contextlib.contextmanager
def runtime(path: Path, **kw):
    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=128, n_threads=1, verbose=False, **kw)
    try:
        yield llm
    finally:
        llm.close()


def cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def torch_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0].numpy()


# ---- F32: logits and greedy decoding --------------------------------------------------------------
@pytest.mark.parametrize("name", ["codette", "llama", "gqa"])
def test_f32_logits_and_greedy_continuation_match_pytorch(trained_models, exported, name) -> None:
    t = trained_models[name]
    model, tok = t.model(), t.tokenizer()
    result = exported(name, "f32")
    assert result.arch == t.arch
    bound = 1e-4 if t.arch == "llama" else 1e-2  # starcoder2's GELU runs through ggml's fp16 table
    worst = 0.0
    with runtime(result.path, type_k=F32_KV, type_v=F32_KV) as llm:
        for messages in PROMPTS:
            ids = tok.encode(render(messages, add_generation_prompt=True))
            diff = float(np.abs(cpp_logits(llm, ids) - torch_logits(model, ids)).max())
            worst = max(worst, diff)
            assert diff <= bound, f"{name}: max |logit diff| {diff:.2e} > {bound}"

            n_new = min(64, model.cfg.max_seq_len - len(ids))  # stop at the context limit
            ours, margins = list(ids), []
            for _ in range(n_new):
                logits = torch_logits(model, ours)[-1]
                top2 = np.sort(logits)[-2:]
                margins.append(float(top2[1] - top2[0]))
                ours.append(int(logits.argmax()))
            theirs = list(ids)
            llm.reset()
            llm.eval(theirs)
            for _ in range(n_new):
                theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([theirs[-1]])
            assert theirs == ours, f"{name}: greedy continuation differs (smallest top-2 margin {min(margins):.2e})"
    print(f"\n{name} ({t.arch}) F32: max |logit diff| {worst:.2e}; greedy {len(PROMPTS)} x 64 tokens identical")


def test_default_f16_kv_cache_stays_within_1e2(trained_models, exported) -> None:
    """Plain ``Llama(path)`` (F16 K/V cache, as users run it) also meets the 1e-2 bound."""
    t = trained_models["llama"]
    model, tok = t.model(), t.tokenizer()
    with runtime(exported("llama", "f32").path) as llm:
        for messages in PROMPTS[:3]:
            ids = tok.encode(render(messages, add_generation_prompt=True))
            assert np.abs(cpp_logits(llm, ids) - torch_logits(model, ids)).max() <= 1e-2


# ---- quantized files --------------------------------------------------------------------------------
# bf16 keeps 8 mantissa bits (f16: 11): on an undertrained fixture model with many near-tied logits it
# flips about 1% of the argmaxes (98.96% measured over 1,536 positions on one fixture). q4_0: a sanity floor.
AGREEMENT = {"f16": 0.99, "bf16": 0.98, "q8_0": 0.97, "q4_0": 0.5}


def check_top1_agreement(t, export, floors: dict[str, float], min_positions: int) -> str:
    """Top-1 agreement of llama.cpp on ``export(quant)`` with PyTorch over 12 val conversations, each at
    least its floor; returns a one-line report."""
    model = t.model()
    seqs = t.val_sequences(12)
    positions = sum(map(len, seqs))
    assert positions >= min_positions
    reference = [torch_logits(model, s).argmax(-1) for s in seqs]
    report = {}
    for quant, floor in floors.items():
        result = export(quant)
        with runtime(result.path) as llm:
            agree = sum(int((cpp_logits(llm, s).argmax(-1) == ref).sum())
                        for s, ref in zip(seqs, reference, strict=True))
        report[quant] = (agree / positions, result.n_bytes)
        assert agree / positions >= floor, f"{t.name} {quant}: top-1 agreement {agree / positions:.2%} < {floor:.0%}"
    return (f"{t.name} top-1 agreement over {positions} positions: "
            + ", ".join(f"{q} {a:.2%} ({b / 1e3:.0f} kB)" for q, (a, b) in report.items()))


@pytest.mark.parametrize("name", ["codette", "llama"])
def test_quantized_top1_agreement(trained_models, exported, name) -> None:
    print("\n" + check_top1_agreement(trained_models[name], lambda q: exported(name, q), AGREEMENT, 512))


def test_quantized_tensor_types(exported) -> None:
    types = read_gguf(exported("llama", "q4_0").path)
    by_name = {t.name: t.type for t in types.tensors}
    assert by_name["blk.0.attn_q.weight"] == "Q4_0"
    assert by_name["token_embd.weight"] == "Q8_0"  # tied: it is also the output matrix
    assert all(t.type == "F32" for t in types.tensors if len(t.shape) == 1)
    q8 = {t.name: t.type for t in read_gguf(exported("codette", "q8_0").path).tensors}
    assert q8["blk.1.ffn_down.weight"] == "Q8_0" and q8["blk.1.ffn_down.bias"] == "F32"


def test_rows_not_whole_blocks_fall_back_to_f16_with_a_warning(trained_models, tmp_path, caplog) -> None:
    """d_model=48: rows of 48 are not whole 32-blocks; untied output so ``output.weight`` is written too."""
    ck = random_checkpoint(tmp_path / "odd", trained_models["codette"].folder, d_model=48, tie_embeddings=False)
    with caplog.at_level(logging.WARNING, logger="codette.export"):
        result = export_gguf(ck, quant="q8_0", modelfile=False)
    assert "blk.0.attn_q.weight" in result.fallbacks and "token_embd.weight" in result.fallbacks
    assert "blk.0.ffn_down.weight" not in result.fallbacks  # rows of 192 quantize fine
    assert any("blk.0.attn_q.weight" in r.getMessage() and "F16" in r.getMessage() for r in caplog.records)
    types = {t.name: t.type for t in read_gguf(result.path).tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["output.weight"] == "F16"
    f32 = export_gguf(ck, quant="f32", modelfile=False)
    from codette.checkpoint import load_model

    model = load_model(ck)[0]
    ids = trained_models["codette"].tokenizer().encode(render(PROMPTS[0], add_generation_prompt=True))
    for path, bound in ((f32.path, 1e-3), (result.path, 2e-2)):  # codette blocks: ggml fp16 GELU table
        with runtime(path, type_k=F32_KV, type_v=F32_KV) as llm:
            assert np.abs(cpp_logits(llm, ids) - torch_logits(model, ids)).max() <= bound


# ---- K-quants, made by llama.cpp's quantizer ----------------------------------------------------------
# Top-1 agreement with the checkpoint over the wide model's ~1,500 val positions, measured on the 2-core
# CPU machine: F16 100%, Q8_0 99.4%, Q6_K 98.5%, Q5_K_M 97.9%, Q4_K_M 97.4%, Q4_0 96.6% (a later build
# of the synthetic data: Q6_K 98.5%, Q5_K_M 98.5%, Q4_K_M 97.8%). The model is
# weakly trained (val loss ~3.3, median top-2 logit margin 0.44), so small weight errors flip the top
# token more often than on a trained model. The floors sit 2.5-4 points under the measured values
# (the binomial standard error at 1,500 positions is 0.4 points): other CPUs may round differently,
# while a broken file (wrong tensor order, rows or types) agrees far less.
KQUANT_AGREEMENT = {"q6_k": 0.96, "q5_k_m": 0.95, "q4_k_m": 0.94}
KQUANT_MAIN = {"q6_k": "Q6_K", "q5_k_m": "Q5_K", "q4_k_m": "Q4_K"}


@pytest.fixture(scope="module")
def wide(model_data):
    """The K-quant test model (:data:`WIDE`), on the trained test models' data and tokenizer."""
    return train_model(model_data, "wide", WIDE, WIDE_TRAIN)


@pytest.fixture(scope="module")
def wide_exported(wide, tmp_path_factory):
    root = tmp_path_factory.mktemp("kquant")
    return {q: export_gguf(wide.checkpoint, root, q, modelfile=False) for q in KQUANT_AGREEMENT}


def test_kquant_tensor_types_and_metadata(wide_exported) -> None:
    for quant, result in wide_exported.items():
        assert list(result.path.parent.glob(".*.tmp")) == []  # the F16 intermediate is gone
        reader = gguf.GGUFReader(result.path)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        matrices = {n: t for n, t in types.items() if len(reader.get_tensor(list(types).index(n)).shape) >= 2}
        assert set(matrices.values()) <= {"Q4_K", "Q5_K", "Q6_K"}, (quant, matrices)
        assert types["blk.0.attn_q.weight"] == types["blk.0.ffn_gate.weight"] == KQUANT_MAIN[quant]
        assert types["token_embd.weight"] == "Q6_K"  # tied: llama.cpp gives the logits matrix Q6_K
        assert all(t == "F32" for n, t in types.items() if n not in matrices)
        fields = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
        assert fields["general.file_type"] == KQUANTS[quant].file_type
        assert fields["general.description"].endswith(f", {quant}")
        assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE and len(fields["tokenizer.ggml.tokens"]) == 512
    q4km = {t.name: t.tensor_type.name for t in gguf.GGUFReader(wide_exported["q4_k_m"].path).tensors}
    assert q4km["blk.0.ffn_down.weight"] == "Q6_K"  # the _M mix: more bits for ffn_down of the edge layers


def test_kquant_top1_agreement_in_llama_cpp(wide, wide_exported) -> None:
    print("\n" + check_top1_agreement(wide, wide_exported.get, KQUANT_AGREEMENT, 1024))


@pytest.mark.parametrize(("shape", "rows", "fitting"), [
    ({"d_model": 64}, "64", "f32, f16, bf16, q8_0, q4_0"),
    ({"d_model": 256, "d_ff": 100}, "100", "f32, f16, bf16"),
])
def test_kquant_refuses_rows_that_are_not_whole_256_blocks(wide, tmp_path, shape, rows, fitting) -> None:
    ck = random_checkpoint(tmp_path / "ck", wide.folder, n_layers=1, block_style="llama", **shape)
    out = tmp_path / "out"
    with pytest.raises(CodetteError, match=rf"--quant q5_k_m needs every matrix row to be a multiple of 256 values, "
                                           rf"but this model has rows of {rows} \(.*\); .* Quant types that fit "
                                           rf"this model: {fitting}$"):
        export_gguf(ck, out, "q5_k_m")
    assert not out.exists() or list(out.iterdir()) == []


def test_kquant_fallback_by_llama_cpp_is_reported(wide, tmp_path) -> None:
    """llama.cpp itself stores a K-quant matrix with rows of 64 as another type; check_types says so."""
    from codette.export.kquant import check_types, quantize

    ck = random_checkpoint(tmp_path / "ck", wide.folder, n_layers=1, block_style="llama", d_model=64)
    f16 = export_gguf(ck, tmp_path, "f16", modelfile=False).path
    quantize(f16, tmp_path / "q4km.gguf", "q4_k_m")
    types = {t.name: t.type for t in read_gguf(tmp_path / "q4km.gguf").tensors}
    assert types["blk.0.attn_q.weight"] not in {"Q4_K", "Q5_K", "Q6_K", "F16"}  # e.g. Q5_0: quietly another type
    with pytest.raises(CodetteError, match=r"llama.cpp did not store every matrix as a K-quant for q4_k_m: "
                                           r"blk\.0\.attn_q\.weight as \w+"):
        check_types(tmp_path / "q4km.gguf", "q4_k_m", ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"])


def test_kquant_failure_leaves_nothing(wide, tmp_path, monkeypatch) -> None:
    import codette.export.gguf_export as ge

    def failing(f16, out, quant):
        assert f16.stat().st_size > 0 and f16.parent == tmp_path  # the F16 intermediate, beside the target
        raise CodetteError("quantizer failed (simulated)")

    monkeypatch.setattr(ge, "quantize", failing)
    with pytest.raises(CodetteError, match="simulated"):
        export_gguf(wide.checkpoint, tmp_path, "q6_k")
    assert list(tmp_path.iterdir()) == []  # no final file, no temporaries, no Modelfile


def test_kquant_without_llama_cpp_is_a_clear_error(wide, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    with pytest.raises(CodetteError, match=r"--quant q4_k_m/q5_k_m/q6_k needs llama-cpp-python .*make install-llama"):
        export_gguf(wide.checkpoint, tmp_path, "q4_k_m")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_kquant(wide, tmp_path) -> None:
    res = CliRunner().invoke(app, ["export", str(wide.checkpoint), "--quant", "Q4_K_M", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "GGUF (llama, q4_k_m)" in res.output and (tmp_path / "codette_tiny-q4_k_m.gguf").is_file()
    assert "FROM ./codette_tiny-q4_k_m.gguf" in (tmp_path / "Modelfile").read_text()


# ---- tokenizer ---------------------------------------------------------------------------------------
def _parity_strings(trained_models) -> list[str]:
    import random

    rng = random.Random(0)
    pieces = [
        "hello", "world", "Codette", "it's", "we'll", "I'M", "don't", "12345", "3.14159", "x**2", "->", "  ", "   ",
        "\t", "\n", "\n\n", "\r\n", " \n ", "é", "ß", "naïve", "Ωμέγα", "Кириллица", "漢字", "ひらがな", "カタカナ",
        "한국어", "😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "e\u0301", "\u00a0", "\u3000", "\u2028", "\u200b", "\ufeff", "\u0085",
        "٣٤٥", "①②", "½", "ｶﾀｶﾅ", "Ⅻ", "𝔘𝔫𝔦", "∑∫", "def f(x):\n    return x + 1\n", '{"a": [1, 2]}', "<tag>",
        "@#$%^&*()", "`", "\\", "'s", "'", '"', "\x00", "\x1b[0m", "<|im", "end|>", "<tool", "_call>",
    ]
    texts = list(SPECIAL_TOKENS)
    for c in trained_models["llama"].val_conversations(60):
        texts.append(render(c["messages"], c.get("tools")))
    while len(texts) < 1200:
        pool = pieces + SPECIAL_TOKENS if rng.random() < 0.3 else pieces
        texts.append(rng.choice(["", " ", "\n", "  "]).join(rng.choice(pool) for _ in range(rng.randint(1, 12))))
    return texts


def test_tokenizer_parity_with_llama_cpp(trained_models, exported) -> None:
    tok = trained_models["llama"].tokenizer()
    texts = _parity_strings(trained_models)
    assert len(texts) >= 1000
    llm = llama_cpp.Llama(str(exported("llama", "f32").path), vocab_only=True, verbose=False)
    try:
        for text in texts:
            ours = tok.encode(text)
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert theirs == ours, f"tokenization differs for {text!r}"
            assert llm.detokenize(theirs, special=True).decode("utf-8") == text
        for special in SPECIAL_TOKENS:
            assert llm.tokenize(special.encode(), add_bos=False, special=True) == [tok.token_id(special)]
        assert llm.token_eos() == tok.im_end_id and llm.token_bos() == tok.bos_id
    finally:
        llm.close()
    print(f"\ntokenizer parity: {len(texts)} strings identical, detokenize round-trips")


# ---- metadata and the CLI --------------------------------------------------------------------------
def test_metadata_and_tensor_set(trained_models, exported) -> None:
    tok = trained_models["gqa"].tokenizer()
    reader = gguf.GGUFReader(exported("gqa", "f16").path)
    f = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama" and f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert f["general.name"] == "Codette tiny"
    expected = {"llama.context_length": 128, "llama.embedding_length": 64, "llama.block_count": 2,
                "llama.feed_forward_length": 256, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                "llama.rope.dimension_count": 16, "llama.vocab_size": 512}
    assert {k: f[k] for k in expected} == expected
    assert f["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.pretokenizer"] == GPT2_REGEX
    assert f["tokenizer.ggml.eos_token_id"] == f["tokenizer.ggml.eot_token_id"] == tok.im_end_id
    assert f["tokenizer.ggml.bos_token_id"] == tok.bos_id and f["tokenizer.ggml.padding_token_id"] == tok.pad_id
    assert f["tokenizer.ggml.add_bos_token"] is False and f["tokenizer.chat_template"] == CHAT_TEMPLATE
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 512 and len(tok) == 500
    assert tokens[500:] == [f"[PAD{i}]" for i in range(500, 512)]
    assert set(types[500:]) == {gguf.TokenType.UNUSED}
    for t in CONTROL_TOKENS:
        assert types[tok.token_id(t)] == gguf.TokenType.CONTROL
    for t in MARKER_TOKENS:
        assert types[tok.token_id(t)] == gguf.TokenType.USER_DEFINED
    assert types[tok.encode("the")[0]] == gguf.TokenType.NORMAL
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names  # tied: llama.cpp falls back to token_embd
    per_layer = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}
    assert names == {"token_embd.weight", "output_norm.weight"} | {f"blk.{i}.{n}.weight" for i in range(2)
                                                                   for n in per_layer}
    sc = {t.name for t in gguf.GGUFReader(exported("codette", "f16").path).tensors}
    biases = {f"blk.{i}.{n}.bias" for i in range(2) for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                                "ffn_norm", "ffn_up", "ffn_down")}
    assert sc == {n.replace(".bias", ".weight") for n in biases} | biases | {
        "token_embd.weight", "output_norm.weight", "output_norm.bias"}


def test_qk_permutation_matches_llama_cpp_convention() -> None:
    """Rows (h, half, i) -> (h, i, half): rotate-half pairs (i, i+D/2) become adjacent (2i, 2i+1)."""
    heads, hd = 2, 4
    w = torch.arange(heads * hd, dtype=torch.float32)[:, None].repeat(1, 3)
    assert rope_halves_to_pairs(w, heads)[:, 0].long().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_torch_casts_are_bit_identical_to_gguf_py() -> None:
    x = torch.randn(64, 96) * torch.logspace(-8, 8, 96)
    x[0, :6] = torch.tensor([0.0, -0.0, 65504.0, 1e9, -1e-9, 2.0**-24])
    for qtype in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
        ours = np.ascontiguousarray(encode(x, qtype)).view(np.uint8)
        theirs = gguf.quants.quantize(x.numpy(), qtype).view(np.uint8)
        assert ours.tobytes() == theirs.tobytes(), qtype.name


@pytest.mark.parametrize("overrides", [{}, {"block_style": "llama", "n_kv_heads": 2}, {"tie_embeddings": False,
                                                                                      "d_ff": 100}])
def test_expected_shapes_match_the_model(overrides) -> None:
    from codette.model import CodetteModel, ModelConfig

    cfg = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, **overrides)
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in CodetteModel(cfg).state_dict().items()}


def test_cli_export_and_inspect(trained_models, tmp_path) -> None:
    runner = CliRunner()
    ck = str(trained_models["codette"].checkpoint)
    res = runner.invoke(app, ["export", ck, "--format", "gguf", "--quant", "q8_0", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    gguf_path = tmp_path / "codette_tiny-q8_0.gguf"
    assert gguf_path.is_file() and (tmp_path / "Modelfile").is_file()
    assert "FROM ./codette_tiny-q8_0.gguf" in (tmp_path / "Modelfile").read_text()
    res = runner.invoke(app, ["inspect", str(gguf_path)])
    assert res.exit_code == 0, res.output
    for text in ("starcoder2.attention.layer_norm_epsilon", "tokenizer.ggml.tokens", "(512 items)",
                 "blk.1.ffn_down.weight", "Q8_0", "token_embd.weight"):
        assert text in res.output
    res = runner.invoke(app, ["inspect", str(gguf_path), "--json"])
    data = json.loads(res.output)
    assert {t["name"]: t["type"] for t in data["tensors"]}["blk.0.ffn_up.bias"] == "F32"


# ---- bad input -------------------------------------------------------------------------------------
def test_missing_and_corrupt_checkpoints(trained_models, tmp_path) -> None:
    with pytest.raises(CodetteError, match="checkpoint not found: .*nope.pt"):
        export_gguf(tmp_path / "nope.pt")
    corrupt = tmp_path / "model_corrupt.pt"
    corrupt.write_bytes(trained_models["llama"].checkpoint.read_bytes()[:5000])
    with pytest.raises(CodetteError, match="model_corrupt.pt is corrupt or truncated"):
        export_gguf(corrupt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CodetteError, match="garbage.pt"):
        export_gguf(garbage)


def test_unknown_quant_type_is_refused_before_loading(tmp_path) -> None:
    with pytest.raises(CodetteError, match="unknown quant type 'q3_k'; choose one of: f32, f16, bf16, q8_0, q4_0, "
                                           "q4_k_m, q5_k_m, q6_k$"):
        export_gguf(tmp_path / "missing.pt", quant="q3_k")


def test_unsupported_arch_and_mismatched_weights(trained_models, tmp_path) -> None:
    with pytest.raises(CodetteError, match="block_style='codette'.*cannot be expressed by GGUF architecture 'llama'"):
        export_gguf(trained_models["codette"].checkpoint, tmp_path, arch="llama")
    with pytest.raises(CodetteError, match="block_style='llama'.*cannot be expressed.*'starcoder2'"):
        export_gguf(trained_models["llama"].checkpoint, tmp_path, arch="starcoder2")
    # a checkpoint whose config says codette but whose weights carry a bias the architecture cannot hold
    state = torch.load(trained_models["codette"].checkpoint, weights_only=True)
    state["model"]["blocks.0.attn.q_proj.bias"] = torch.zeros(64)
    bad = tmp_path / "biased" / "model_final.pt"
    bad.parent.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bad.parent / f).write_bytes((trained_models["codette"].folder / f).read_bytes())
    torch.save(state, bad)
    with pytest.raises(CodetteError, match="tensor 'blocks.0.attn.q_proj.bias' is not part of a 'codette'-style"):
        export_gguf(bad, tmp_path)
    state["model"].pop("blocks.0.attn.q_proj.bias")
    state["model_config"]["block_style"] = "llama"  # SwiGLU config, GELU weights: gate_proj missing
    torch.save(state, bad)
    with pytest.raises(CodetteError, match="lack tensor 'blocks.0.mlp.gate_proj.weight'"):
        export_gguf(bad, tmp_path)
    assert not list(tmp_path.glob("*.gguf"))


def test_existing_target_needs_force(trained_models, tmp_path) -> None:
    ck = trained_models["llama"].checkpoint
    first = export_gguf(ck, tmp_path, "q4_0")
    stamp = first.path.stat().st_mtime_ns
    with pytest.raises(CodetteError, match="codette_tiny-q4_0.gguf already exists; pass --force"):
        export_gguf(ck, tmp_path, "q4_0")
    assert first.path.stat().st_mtime_ns == stamp
    # another quantisation keeps the first one's Modelfile and writes its own beside it
    second = export_gguf(ck, tmp_path, "q8_0")
    assert second.modelfile == tmp_path / "Modelfile.q8_0" and second.modelfile_kept == tmp_path / "Modelfile"
    assert "FROM ./codette_tiny-q4_0.gguf" in (tmp_path / "Modelfile").read_text()
    (tmp_path / "codette_tiny-q8_0.gguf").unlink()
    with pytest.raises(CodetteError, match="Modelfile.q8_0 already exists"):
        export_gguf(ck, tmp_path, "q8_0")  # its own Modelfile is a target too
    again = export_gguf(ck, tmp_path, "q4_0", force=True)
    assert again.path == first.path and again.modelfile == tmp_path / "Modelfile"


def test_write_failing_halfway_leaves_nothing(trained_models, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def failing(self, tensor, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (simulated)")
        return real(self, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(trained_models["llama"].checkpoint, tmp_path, "f16")
    assert list(tmp_path.iterdir()) == []  # no final file, no temporary left behind, no Modelfile


def test_export_killed_halfway_leaves_no_file_at_the_final_name(trained_models, tmp_path) -> None:
    """SIGKILL during the tensor writes: the final name never appears (only a dot-temp can remain)."""
    script = textwrap.dedent(f"""
        import time, gguf
        from codette.export import export_gguf
        real = gguf.GGUFWriter.write_tensor_data
        def slow(self, *a, **k):
            real(self, *a, **k); self.fout[0].flush(); time.sleep(0.2)
        gguf.GGUFWriter.write_tensor_data = slow
        export_gguf({str(trained_models['llama'].checkpoint)!r}, {str(tmp_path)!r}, 'f32')
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 0 for p in tmp_path.glob(".*.tmp")):
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(n.startswith(".codette_tiny-f32.gguf.") for n in leftovers), leftovers
    assert not (tmp_path / "codette_tiny-f32.gguf").exists()


def test_export_package_does_not_import_training_code(trained_models, tmp_path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from codette.export import export_gguf, export_hf, read_gguf
        export_gguf({str(trained_models['llama'].checkpoint)!r}, {str(tmp_path)!r}, 'q8_0')
        bad = sorted(m for m in sys.modules if m.startswith('codette.train'))
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
