"""The network: causality, KV-cache exactness, its loss, sampling, meta-device init, presets' sizes and config.

Every model here is tiny (d_model 32-64, 1-2 layers) so the whole file runs in seconds on one core.
"""

from __future__ import annotations

import math
import resource

import pytest
import torch
import torch.nn.functional as F

import codette.model.transformer as transformer
from codette.data.loader import IGNORE_INDEX as DATA_IGNORE_INDEX
from codette.model import (
    IGNORE_INDEX,
    CodetteModel,
    LMOutput,
    ModelConfig,
    count_parameters,
    generate_tokens,
    padded_vocab,
    preset_config,
)
from codette.model.generate import filter_logits

VOCAB = 128


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# (block_style, n_heads, n_kv_heads): both styles with full multi-head attention and with GQA.
ARCHS = [
    ("codette", 4, None),
    ("llama", 4, None),
    ("codette", 4, 2),
    ("llama", 8, 2),
]
ARCH_IDS = [f"{s}-h{h}-kv{kv or h}" for s, h, kv in ARCHS]


def _model(style: str = "codette", n_heads: int = 4, n_kv_heads: int | None = None, *, seed: int = 0,
           d_model: int = 64, n_layers: int = 2, max_seq_len: int = 128, vocab: int = VOCAB,
           init_std: float = 0.02) -> CodetteModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      max_seq_len=max_seq_len, block_style=style, init_std=init_std)
    return CodetteModel(cfg).eval()


# ------------------------------------------------------------------------------------------------
# Causality
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("style", "n_heads", "n_kv_heads"), ARCHS, ids=ARCH_IDS)
def test_changing_token_t_never_changes_earlier_logits(style: str, n_heads: int, n_kv_heads: int | None) -> None:
    model = _model(style, n_heads, n_kv_heads, d_model=32)
    if n_kv_heads:
        assert model.blocks[0].attn.k_proj.out_features == n_kv_heads * (32 // n_heads)  # GQA is really on
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, VOCAB, (1, 12), generator=g)
    with torch.no_grad():
        base = model(seq)
        for t in range(seq.shape[1]):
            changed = seq.clone()
            changed[0, t] = (changed[0, t] + 1 + t) % VOCAB
            out = model(changed)
            assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6, rtol=0), f"position < {t} saw token {t}"
            assert (out[0, t] - base[0, t]).abs().max() > 1e-4, f"logits at {t} ignore token {t}"


# ------------------------------------------------------------------------------------------------
# KV cache
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("style", "n_heads", "n_kv_heads"), ARCHS, ids=ARCH_IDS)
def test_cached_greedy_generation_equals_uncached(style: str, n_heads: int, n_kv_heads: int | None) -> None:
    # A larger init spread gives varied (non-degenerate) greedy continuations from a random model.
    model = _model(style, n_heads, n_kv_heads, seed=3, init_std=0.2)
    cfg = dict(max_new_tokens=48, temperature=0.0)
    prompt = [5, 17, 42, 99, 3]
    cached = list(generate_tokens(model, prompt, **cfg, use_cache=True))
    uncached = list(generate_tokens(model, prompt, **cfg, use_cache=False))
    assert len(cached) == 48
    assert cached == uncached
    assert len(set(cached)) > 3  # not a trivial one-token loop, so the comparison means something


@pytest.mark.parametrize(("style", "n_heads", "n_kv_heads"), ARCHS, ids=ARCH_IDS)
def test_chunked_prefill_through_cache_matches_full_forward(style: str, n_heads: int, n_kv_heads: int | None) -> None:
    model = _model(style, n_heads, n_kv_heads)
    seq = torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(2)
        first = model(seq[:, :13], cache=cache)
        assert cache.length == 13
        second = model(seq[:, 13:20], cache=cache)
        third = model(seq[:, 20:], cache=cache)  # one token, as in decoding
        assert cache.length == 21
    chunked = torch.cat([first, second, third], dim=1)
    assert chunked.shape == full.shape
    assert torch.allclose(chunked, full, atol=1e-5, rtol=0), (chunked - full).abs().max()


def test_token_by_token_decoding_equals_full_forward_for_gqa() -> None:
    model = _model("llama", 8, 2, seed=4)
    seq = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(1)
        steps = [model(seq[:, :5], cache=cache)] + [model(seq[:, t : t + 1], cache=cache) for t in range(5, 40)]
    decoded = torch.cat(steps, dim=1)
    assert torch.allclose(decoded, full, atol=1e-5, rtol=0), (decoded - full).abs().max()


def test_attention_masks_only_a_chunk_after_a_cached_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh prefill: is_causal, no mask (flash-eligible). One decoded token: no mask. Chunk after a prefix:
    the explicit mask. Grouped-query keys reach SDPA with their own head count (enable_gqa), never repeated."""
    calls: list[dict] = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append({"mask": attn_mask is not None, "causal": is_causal, "q_heads": q.shape[1],
                      "k_heads": k.shape[1], "gqa": kw.get("enable_gqa", False)})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    model = _model("llama", 8, 2, n_layers=1)
    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    seq = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = model.new_cache(1)
        model(seq[:, :6], cache=cache)  # prefill of a fresh cache
        model(seq[:, 6:7], cache=cache)  # one decoded token
        model(seq[:, 7:], cache=cache)  # a chunk after the prefix
        model(seq)  # no cache at all
    assert [(c["mask"], c["causal"]) for c in calls] == [(False, True), (False, False), (True, False), (False, True)]
    assert all(c["q_heads"] == 8 and c["k_heads"] == 2 and c["gqa"] for c in calls)


def test_forward_longer_than_context_raises_naming_max_seq_len() -> None:
    model = _model(max_seq_len=16, d_model=32, n_layers=1)
    model(torch.zeros(1, 16, dtype=torch.long))  # exactly the context is fine
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 14, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


# ------------------------------------------------------------------------------------------------
# generate_tokens stopping rules
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen_model() -> CodetteModel:
    return _model("llama", 4, 2, seed=5, d_model=32, max_seq_len=64, init_std=0.2)


def test_generation_stops_at_max_new_tokens(gen_model: CodetteModel) -> None:
    for n in (0, 1, 7):
        out = list(generate_tokens(gen_model, [1, 2, 3], max_new_tokens=n, temperature=0.0))
        assert len(out) == n


def test_generation_stops_at_stop_id_without_yielding_it(gen_model: CodetteModel) -> None:
    cfg = dict(max_new_tokens=30, temperature=0.0)
    free = list(generate_tokens(gen_model, [1, 2, 3], **cfg))
    assert len(free) == 30
    stop = free[5]
    expected = free[: free.index(stop)]
    for use_cache in (True, False):
        out = list(generate_tokens(gen_model, [1, 2, 3], **cfg, stop_ids=[stop, VOCAB + 7], use_cache=use_cache))
        assert out == expected
        assert stop not in out


def test_generation_stops_at_the_context_limit(gen_model: CodetteModel) -> None:
    max_len = gen_model.cfg.max_seq_len
    prompt = list(range(1, 51))
    for use_cache in (True, False):
        out = list(generate_tokens(gen_model, prompt, max_new_tokens=1000, temperature=0.0, use_cache=use_cache))
        assert len(out) == max_len - len(prompt)
    with pytest.raises(ValueError, match="context"):
        list(generate_tokens(gen_model, list(range(max_len)), max_new_tokens=128, temperature=0.0))
    with pytest.raises(ValueError):
        list(generate_tokens(gen_model, [], max_new_tokens=128, temperature=0.0))


def test_sampling_with_a_seed_is_reproducible(gen_model: CodetteModel) -> None:
    def run(seed: int, use_cache: bool = True) -> list[int]:
        cfg = dict(max_new_tokens=40, temperature=1.0, top_k=50, top_p=0.95, seed=seed)
        return list(generate_tokens(gen_model, [4, 8, 15], **cfg, use_cache=use_cache))

    a, b = run(123), run(123)
    assert len(a) == 40
    assert a == b
    assert run(123, use_cache=False) == a
    assert run(124) != a


class PaddingRowsWin(torch.nn.Module):
    """An output projection whose rows at and past ``n_real`` (the padding) get huge logits."""

    def __init__(self, head: torch.nn.Module, n_real: int) -> None:
        super().__init__()
        self.head, self.n_real = head, n_real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x).clone()
        out[..., self.n_real:] = 1e4
        return out


def test_padding_rows_are_never_sampled() -> None:
    n_real = VOCAB - 28  # a 100-token tokenizer padded to 128 rows
    model = _model("llama", 4, 2, seed=5, d_model=32, max_seq_len=64, init_std=0.2)
    model.lm_head = PaddingRowsWin(model.lm_head, n_real)
    greedy = dict(max_new_tokens=20, temperature=0.0)
    assert all(t >= n_real for t in generate_tokens(model, [1, 2, 3], **greedy))  # the trap is armed
    for cfg in (greedy, dict(max_new_tokens=20, temperature=1.5, seed=0),
                dict(max_new_tokens=20, temperature=1.0, top_k=200, top_p=1.0, seed=1)):
        for use_cache in (True, False):
            out = list(generate_tokens(model, [1, 2, 3], **cfg, use_cache=use_cache, vocab_size=n_real))
            assert len(out) == 20 and max(out) < n_real, (cfg, out)
    with pytest.raises(ValueError, match="vocab_size"):
        list(generate_tokens(model, [1, 2, 3], **greedy, vocab_size=VOCAB + 1))


@pytest.mark.parametrize("training", [True, False])
def test_generation_restores_the_callers_mode(gen_model: CodetteModel, training: bool) -> None:
    seen = []
    gen_model.train(training)
    try:
        gen = generate_tokens(gen_model, [1, 2, 3], max_new_tokens=5, temperature=0.0)
        next(gen)
        seen.append(gen_model.training)  # decoding runs in eval mode (no dropout)
        list(gen)
        assert gen_model.training is training
        gen = generate_tokens(gen_model, [1, 2, 3], max_new_tokens=5, temperature=0.0)
        next(gen)
        gen.close()  # a caller that stops early (a stop condition of its own)
        assert gen_model.training is training
    finally:
        gen_model.eval()
    assert seen == [False]


# ------------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------------
def test_forward_with_targets_returns_summed_loss_and_target_count() -> None:
    model = _model("codette", 4, None, d_model=32)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (3, 10), generator=g)
    y = torch.randint(0, VOCAB, (3, 10), generator=g)
    y[0, :4] = IGNORE_INDEX
    y[2, :] = IGNORE_INDEX
    with torch.no_grad():
        out = model(x, y)
        logits = model(x)
    assert isinstance(out, LMOutput) and torch.equal(out.logits, logits)
    assert int(out.n_targets) == 3 * 10 - 4 - 10
    by_hand = -logits.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0][y != IGNORE_INDEX].sum()
    assert float(out.loss_sum) == pytest.approx(float(by_hand), rel=1e-5)
    # Sums add up across batches: splitting a batch and adding the parts gives the whole.
    with torch.no_grad():
        parts = [model(x[i : i + 1], y[i : i + 1]) for i in range(3)]
    assert float(sum(p.loss_sum for p in parts)) == pytest.approx(float(out.loss_sum), rel=1e-5)
    assert sum(int(p.n_targets) for p in parts) == int(out.n_targets)
    assert DATA_IGNORE_INDEX == IGNORE_INDEX  # the data's masked targets are the ones the loss skips


def test_last_only_projects_the_last_position() -> None:
    model = _model("llama", 8, 2, d_model=32)
    x = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        last = model(x, last_only=True)
        full = model(x)
    assert last.shape == (2, 1, VOCAB)
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="last_only"):
        model(x, x, last_only=True)


def test_scored_only_projects_the_scored_positions_and_trains_as_the_full_output() -> None:
    """Training's output layer only where a target is scored: the same loss and count, and 50 AdamW steps on
    masked targets (a third scored, as in chat windows) stay within 1e-4 relative of the full projection."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (4, 24), generator=g)
    y = torch.randint(0, VOCAB, (4, 24), generator=g)
    y[torch.rand(4, 24, generator=g) > 0.33] = IGNORE_INDEX
    y[3] = IGNORE_INDEX  # a window without a scored target
    model = _model("llama", 4, 2, d_model=32)
    with torch.no_grad():
        full, part = model(x, y), model(x, y, scored_only=True)
    n = int((y != IGNORE_INDEX).sum())
    assert part.logits.shape == (transformer.SCORED_ROWS, VOCAB) and int(part.n_targets) == int(full.n_targets) == n
    assert torch.allclose(part.logits[:n], full.logits[y != IGNORE_INDEX], atol=1e-6, rtol=0)
    assert float(part.loss_sum) == pytest.approx(float(full.loss_sum), rel=1e-6)

    def run(scored_only: bool) -> list[float]:
        torch.manual_seed(0)
        m = _model("llama", 4, 2, d_model=32)
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
        losses = []
        for _ in range(50):
            out = m(x, y, scored_only=scored_only)
            loss = out.loss_sum / out.n_targets
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    plain, scored = run(False), run(True)
    assert plain[-1] < plain[0] * 0.8  # it trains
    assert max(abs(a - b) / a for a, b in zip(plain, scored)) < 1e-4


def test_compiled_blocks_serve_the_training_forward_only() -> None:
    """compile_blocks: the training forward runs the compiled callables, evaluation and cached decoding the
    plain blocks (their shapes change every call), and the state_dict keeps the eager model's keys."""
    model = _model("llama", 4, 2, d_model=32)
    keys = list(model.state_dict())
    model.compile_blocks()
    assert list(model.state_dict()) == keys
    used: list[str] = []

    def recording(block: torch.nn.Module, i: int):  # stands in for block i's compiled callable
        def call(*args: object) -> torch.Tensor:
            used.append(f"compiled {i}")
            return block(*args)
        return call

    model._training_blocks = [recording(b, i) for i, b in enumerate(model.blocks)]
    x = torch.randint(0, VOCAB, (2, 8))
    model.train()
    trained = model(x)
    assert used == [f"compiled {i}" for i in range(len(model.blocks))]
    used.clear()
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), trained, atol=1e-6)  # dropout is 0: the same function
        cache = model.new_cache(2)
        model(x, cache=cache)
    model.train()
    model(x, cache=model.new_cache(2))  # a cache means decoding even in training mode
    assert used == []


# ------------------------------------------------------------------------------------------------
# filter_logits
# ------------------------------------------------------------------------------------------------
def test_top_k_keeps_exactly_k() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 100, generator=g)
    for k in (1, 5, 37, 99):
        out = filter_logits(logits, top_k=k, top_p=1.0)
        kept = torch.isfinite(out)
        assert (kept.sum(-1) == k).all()
        top = torch.topk(logits, k, dim=-1).indices
        assert kept.gather(-1, top).all()
        assert torch.equal(out[kept], logits[kept])  # survivors keep their values
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=100, top_p=1.0), logits)


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([0.04, 0.30, 0.10, 0.50, 0.06])  # sorted: .50 .30 .10 .06 .04
    logits = probs.log()
    for p, expected in [(0.3, {3}), (0.75, {3, 1}), (0.85, {3, 1, 2}), (0.93, {3, 1, 2, 4}), (0.99, {0, 1, 2, 3, 4})]:
        out = filter_logits(logits, top_k=0, top_p=p)
        assert set(torch.isfinite(out).nonzero().flatten().tolist()) == expected, p
        kept = torch.isfinite(out)
        assert torch.allclose(out[kept], logits[kept])

    # Random rows against a brute-force nucleus.
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 30, generator=g) * 2
    for p in (0.2, 0.5, 0.9):
        out = filter_logits(logits, top_k=0, top_p=p)
        for row, row_out in zip(logits, out):
            pr, order = row.softmax(-1).sort(descending=True)
            n = int((pr.cumsum(0) < p).sum()) + 1  # smallest prefix whose mass reaches p
            assert set(torch.isfinite(row_out).nonzero().flatten().tolist()) == set(order[:n].tolist())


# ------------------------------------------------------------------------------------------------
# Presets and parameter counts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["codette", "llama"])
@pytest.mark.parametrize(("name", "nominal"), [("1.3b", 1.3e9), ("2.7b", 2.7e9), ("5.3b", 5.3e9)])
def test_big_presets_are_within_5_percent_of_their_name(name: str, nominal: float, style: str) -> None:
    n = count_parameters(preset_config(name, block_style=style))
    assert abs(n - nominal) / nominal < 0.05, f"{name} ({style}): {n:,} parameters"


@pytest.mark.parametrize("style", ["codette", "llama"])
@pytest.mark.parametrize("name", ["tiny", "small-cpu"])
def test_cpu_presets_have_5_to_15_million_parameters(name: str, style: str) -> None:
    n = count_parameters(preset_config(name, block_style=style))
    assert 5e6 <= n <= 15e6, f"{name} ({style}): {n:,}"


def test_meta_count_equals_real_count_for_tiny() -> None:
    cfg = preset_config("tiny")
    real = CodetteModel(cfg)
    by_hand = sum(p.numel() for p in {id(p): p for p in real.parameters()}.values())
    assert count_parameters(cfg) == real.num_parameters() == by_hand
    assert cfg.extra["preset"] == "tiny"


def _analytic_codette_count(cfg: ModelConfig) -> int:
    """Multi-head codette blocks: 4 d^2 attention + 8 d^2 MLP + two norm scales each; tied embedding."""
    d = cfg.d_model
    return cfg.vocab_size * d + cfg.n_layers * (12 * d * d + 2 * d) + d


def test_the_largest_preset_builds_on_meta_without_memory() -> None:
    name = max(("1.3b", "2.7b", "5.3b"), key=lambda n: count_parameters(preset_config(n)))
    cfg = preset_config(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.device("meta"):
        model = CodetteModel(cfg)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert model.num_parameters() == count_parameters(cfg) == _analytic_codette_count(cfg) > 5e9
    assert grown_mib < 256, f"{grown_mib:.0f} MiB for a {model.num_parameters():,}-parameter model on meta"


@pytest.mark.parametrize(("style", "n_heads", "n_kv_heads"), ARCHS, ids=ARCH_IDS)
def test_meta_then_init_weights_equals_the_constructor(style: str, n_heads: int, n_kv_heads: int | None) -> None:
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      max_seq_len=128, block_style=style)
    torch.manual_seed(11)
    direct = CodetteModel(cfg)
    with torch.device("meta"):
        lazy = CodetteModel(cfg)
    lazy.to_empty(device="cpu")
    torch.manual_seed(11)
    lazy.init_weights()
    assert lazy.lm_head.weight is lazy.embed.weight  # to_empty unties; init_weights ties again
    assert lazy.num_parameters() == direct.num_parameters()
    a, b = direct.state_dict(), lazy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(lazy.rotary.cos, direct.rotary.cos) and torch.equal(lazy.rotary.sin, direct.rotary.sin)
    x = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = lazy(x)
        assert torch.isfinite(out).all() and torch.equal(out, direct(x))


def test_embeddings_are_tied() -> None:
    model = _model(d_model=32, n_layers=1)
    assert model.lm_head.weight is model.embed.weight
    untied_cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=4, tie_embeddings=False)
    untied = CodetteModel(untied_cfg)
    assert untied.lm_head.weight is not untied.embed.weight
    assert count_parameters(untied_cfg) - count_parameters(model.cfg) == VOCAB * 32


# ------------------------------------------------------------------------------------------------
# ModelConfig validation and helpers
# ------------------------------------------------------------------------------------------------
def test_n_heads_must_divide_d_model() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(d_model=64, n_heads=5)


def test_bad_block_style_is_rejected() -> None:
    with pytest.raises(ValueError, match="block_style"):
        ModelConfig(block_style="gpt2")


def test_n_kv_heads_must_divide_n_heads() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(d_model=64, n_heads=4, n_kv_heads=3)
    ModelConfig(d_model=64, n_heads=4, n_kv_heads=1)  # multi-query attention is fine


def test_padded_vocab_is_a_multiple_of_64() -> None:
    for n in range(1, 2000):
        v = padded_vocab(n)
        assert v % 64 == 0 and n <= v < n + 64, n
    assert padded_vocab(64) == 64 and padded_vocab(65) == 128 and padded_vocab(600) == 640


@pytest.mark.parametrize("style", ["codette", "llama"])
def test_random_init_loss_is_about_ln_vocab(style: str) -> None:
    vocab = 512
    model = _model(style, vocab=vocab, d_model=64, n_layers=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (4, 64), generator=g)
    y = torch.randint(0, vocab, (4, 64), generator=g)
    with torch.no_grad():
        out = model(x, y)
    loss = float(out.loss_sum / out.n_targets)
    assert abs(loss - math.log(vocab)) < 0.1, loss


@pytest.mark.parametrize(("style", "n_heads", "n_kv_heads"), ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("tied", [True, False])
def test_count_from_the_shapes_equals_the_built_model(style: str, n_heads: int, n_kv_heads: int | None,
                                                      tied: bool) -> None:
    """`codette presets` counts without torch (codette.model.config); the count is the real model's."""
    for d_ff in (None, 200):
        cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=3, n_heads=n_heads, n_kv_heads=n_kv_heads,
                          d_ff=d_ff, block_style=style, tie_embeddings=tied)
        with torch.device("meta"):
            model = CodetteModel(cfg)
        assert count_parameters(cfg) == model.num_parameters(), (style, n_kv_heads, tied, d_ff)
