"""Evaluation: every metric on hand-built outputs whose right score is known, bits per byte, probes
during training, and clear errors on bad input (tokenizer, probes, GGUF). The text scorers it builds
on (identity, perspectives, key facts, intervals) are tested in test_scoring.py."""

from __future__ import annotations

import builtins
import io
import json
import math
import shutil
from contextlib import closing
from pathlib import Path

import pytest
import torch
from rich.console import Console

from codette.backends.base import Chunk, SamplingConfig, collect
from codette.backends.local import LocalBackend
from codette.cli import stages
from codette.errors import CodetteError
from codette.evaluate import tool_metric as tm
from codette.evaluate.lm import evaluate_lm, token_byte_lengths
from codette.evaluate.probes import Probe, probe_set, select
from codette.evaluate.probes_run import ToolWorkspace, run_probe, run_probes, summarize
from codette.evaluate.run import evaluate_checkpoint, evaluate_path, gguf_lm_metrics
from codette.data.loader import BatchSampler
from codette.data.pack import PackedSplit
from codette.evaluate.training import TrainingMonitor, build_monitor, interleave
from codette.data.build import ensure_packed
from codette.data.loader import IGNORE_INDEX
from codette.model import LMOutput, cross_entropy_sum
from codette.scoring.tool_facts import key_facts
from codette.tokenizer import CodetteTokenizer
from codette.tools import format_tool_call
from codette.train.selection import needs_probes
from tests._pipeline import QUIET, codette, losses, tiny_config
from tests._runtimes import require

# ---- tool use -------------------------------------------------------------------------------------------
PROMPT = "Quick one: What is 40% of 179?"
RESULT = '{"expression": "179 * 40 / 100", "result": 71.6}'
REFERENCE = "The result is 71.6."
CALL = format_tool_call("calculator", {"expression": "179 * 40 / 100"})


def _facts() -> list[str]:
    return key_facts(REFERENCE, RESULT, PROMPT)


def test_perfect_tool_call_scores_one_on_every_rung() -> None:
    s, call = tm.score_call(CALL, "calculator")
    assert (s.json_valid, s.right_tool, s.args_valid) == (1, 1, 1) and call is not None
    s = tm.score_final(s, "The result is 71.6.", _facts(), RESULT, RESULT)
    assert s.task_success == 1 and s.facts == ["71.6"] and s.facts_found == 1 and s.error is None
    assert s.result_match == 1


def test_result_match_is_independent_of_the_final_answer() -> None:
    s, _ = tm.score_call(CALL, "calculator")
    s = tm.score_final(s, "I do not know.", _facts(), RESULT, RESULT)
    assert (s.result_match, s.task_success) == (1, 0)  # right call, answer lacks the fact
    s, _ = tm.score_call(CALL, "calculator")
    s = tm.score_final(s, "The result is 71.6.", _facts(), '{"result": 716.0}', RESULT)
    assert s.result_match == 0  # another result; the answer happens to state the reference number


def test_wrong_tool_scores_zero_from_right_tool_on() -> None:
    s, call = tm.score_call(format_tool_call("web_search", {"query": "40% of 179"}), "calculator")
    assert (s.json_valid, s.right_tool, s.args_valid, s.task_success) == (1, 0, 0, 0)
    assert call is None and s.called == "web_search" and "expected 'calculator'" in s.error


@pytest.mark.parametrize("reply", [
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": }\n</tool_call>',  # broken JSON
    '<tool_call>\n{"name": "calculator", "arguments": "179 * 40 / 100"}\n</tool_call>',  # arguments not an object
    '<tool_call>\n["calculator"]\n</tool_call>',  # not an object
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1"}}',  # never closed
    "The answer is 71.6.",  # no call at all
])
def test_malformed_or_missing_call_scores_zero(reply: str) -> None:
    s, call = tm.score_call(reply, "calculator")
    assert (s.json_valid, s.right_tool, s.args_valid, s.task_success) == (0, 0, 0, 0) and call is None
    assert s.error


@pytest.mark.parametrize("args", [{"expr": "179 * 40 / 100"}, {"expression": 71.6}, {"expression": ""},
                                  {"expression": "1 + 1", "precision": 3}])
def test_schema_invalid_arguments_stop_at_args_valid(args: dict) -> None:
    s, call = tm.score_call(format_tool_call("calculator", args), "calculator")
    assert (s.json_valid, s.right_tool, s.args_valid) == (1, 1, 0) and call is None
    assert s.error.startswith("schema: calculator")


@pytest.mark.parametrize("final, ok", [
    ("The result is 71.6.", 1),
    ("40% of 179 is 71.60", 1),  # numbers match by value
    ("It comes to 71.6, as the calculator says.", 1),
    ("The result is 71.5.", 0),  # wrong number
    ("40% of 179 is a number.", 0),  # echoing the prompt earns nothing
    ("", 0),
])
def test_task_success_needs_the_correct_result_in_the_final_answer(final: str, ok: int) -> None:
    s, _ = tm.score_call(CALL, "calculator")
    assert tm.score_final(s, final, _facts(), RESULT, RESULT).task_success == ok


class Scripted:
    """A ChatBackend that replies from a list (hand-built model outputs)."""

    name = "scripted"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             sampling: SamplingConfig | None = None) -> str:
        self.seen.append(messages)
        return self.replies.pop(0)


def _tool_probe() -> Probe:
    return Probe("calc@1", "tool", [{"role": "user", "content": PROMPT}], REFERENCE, None,
                 {"tool": "calculator", "tool_arguments": {"expression": "179 * 40 / 100"}, "expected_result": RESULT,
                  "setup": {}})


@pytest.mark.parametrize("call, final, success", [
    (CALL, "The result is 71.6.", 1),
    # a valid call that computes the wrong thing: the tool really runs, returns 716, the answer follows it
    (format_tool_call("calculator", {"expression": "179 * 40 / 10"}), "The result is 716.", 0),
])
def test_run_probe_runs_the_call_for_real_and_scores_the_final_answer(call: str, final: str, success: int) -> None:
    backend, runner = Scripted(call, final), ToolWorkspace()
    try:
        r = run_probe(backend, _tool_probe(), SamplingConfig(temperature=0.0), runner)
    finally:
        runner.close()
    assert r["score"]["args_valid"] == 1 and r["score"]["task_success"] == success
    assert r["score"]["result_match"] == success  # the wrong expression returned another result
    tool_msg = backend.seen[1][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"])["result"] == (71.6 if success else 716)


def test_no_tool_probe_scores_abstention() -> None:
    assert tm.abstained("Hello, Maya! I'm Codette.")
    assert not tm.abstained(CALL)
    probe = Probe("greet@1", "no_tool", [{"role": "user", "content": "Hi, I'm Maya!"}], "Hello!", None, {})
    runner = ToolWorkspace()
    results = [run_probe(Scripted(reply), probe, SamplingConfig(temperature=0.0), runner)
               for reply in ("Hello, Maya!", CALL, "Hi there.")]
    assert [r["score"]["abstained"] for r in results] == [1, 0, 1]
    fig = summarize(results)["figures"]["tool_abstain"]
    assert fig["n"] == 3 and fig["value"] == pytest.approx(2 / 3)


# ---- consciousness_score and the summary ----------------------------------------------------------------
def _ident(aspect: str, score: int) -> dict:
    return {"kind": "identity", "group": aspect, "aspect": aspect,
            "score": {"score": score, "qtype": "identity", "marker": True}}


def test_consciousness_score_is_the_mean_of_the_three_aspect_scores() -> None:
    results = [_ident("identity", 1), _ident("identity", 1), _ident("self_reference", 1), _ident("self_reference", 0),
               _ident("intentionality", 0)]
    f = summarize(results)["figures"]
    assert f["identity_score"]["value"] == 1.0 and f["self_reference_score"]["value"] == 0.5
    assert f["intentionality_score"]["value"] == 0.0
    c = f["consciousness_score"]
    assert c["value"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3; pooling the probes would give 3/5
    assert c["n"] == 5 and 0.0 <= c["low"] <= c["value"] <= c["high"] <= 1.0


@pytest.mark.parametrize("scores", [(0, 0, 0), (1, 1, 1), (1, 0, 1)])
def test_consciousness_score_stays_in_unit_interval(scores: tuple[int, int, int]) -> None:
    results = [_ident(a, s) for a, s in zip(("identity", "self_reference", "intentionality"), scores)]
    c = summarize(results)["figures"]["consciousness_score"]
    assert c["value"] == pytest.approx(sum(scores) / 3) and 0.0 <= c["low"] <= c["value"] <= c["high"] <= 1.0


def test_summary_of_no_probes_of_a_kind_is_nan_with_n_zero() -> None:
    f = summarize([_ident("identity", 1)])["figures"]
    assert f["tool_task_success"]["n"] == 0 and math.isnan(f["tool_task_success"]["value"])
    assert f["consciousness_score"]["value"] == 1.0  # the mean of the aspects that were probed


# ---- language modelling ---------------------------------------------------------------------------------
class Uniform(torch.nn.Module):
    """Logits that are equal everywhere: every target costs ln V nats and the argmax is token 0."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, x: torch.Tensor, targets: torch.Tensor) -> LMOutput:
        logits = torch.zeros(*x.shape, self.vocab)
        return LMOutput(logits, *cross_entropy_sum(logits, targets))


def test_lm_metrics_and_bits_per_byte_on_a_hand_computed_case() -> None:
    x = torch.zeros(1, 4, dtype=torch.long)
    y = torch.tensor([[0, 1, IGNORE_INDEX, 3]])
    token_bytes = torch.tensor([1, 2, 3, 4])
    m = evaluate_lm(Uniform(4), [(x, y)], token_bytes=token_bytes)
    assert m.tokens == 3 and m.val_loss == pytest.approx(math.log(4))
    assert m.perplexity == pytest.approx(4.0) and m.token_accuracy == pytest.approx(1 / 3)
    # 3 targets x ln 4 nats = 6 bits, over 1 + 2 + 4 = 7 bytes (the masked token's 3 bytes do not count)
    assert m.target_bytes == 7 and m.bits_per_byte == pytest.approx(6 / 7)
    assert math.isnan(evaluate_lm(Uniform(4), [(x, y)]).bits_per_byte)  # no byte table, no bpb


def test_token_byte_lengths(tokenizer: CodetteTokenizer) -> None:
    lengths = token_byte_lengths(tokenizer, n_rows=len(tokenizer) + 8)
    vocab = tokenizer.tok.get_vocab(with_added_tokens=True)
    assert lengths[vocab["<|im_end|>"]] == len("<|im_end|>") and lengths[-8:].sum() == 0
    ids = tokenizer.encode("Hello, wörld")  # ö is two UTF-8 bytes
    assert int(lengths[ids].sum()) == len("Hello, wörld".encode("utf-8"))


# ---- probes: selection and bad input --------------------------------------------------------------------
def _probe(kind: str, group: str, i: int) -> Probe:
    key = {"tool": "tool", "identity": "aspect", "perspective": "perspective"}.get(kind, "scenario")
    return Probe(f"{kind}-{group}@{i}", kind, [{"role": "user", "content": "hi"}], "", None, {key: group})


def test_probe_subsets_are_balanced_and_prefixes_of_larger_ones() -> None:
    probes = [_probe("tool", t, i) for t in ("calculator", "read_file", "web_search") for i in range(5)]
    probes += [_probe("identity", a, i) for a in ("identity", "self_reference") for i in range(4)]
    small, large = select(probes, 3), select(probes, 6)
    assert {p.group for p in small if p.kind == "tool"} == {"calculator", "read_file", "web_search"}
    assert [p.id for p in small if p.kind == "tool"] == [p.id for p in large if p.kind == "tool"][:3]
    order = [p.kind for p in interleave(large)]
    assert order[:2] == ["tool", "identity"]


def test_a_limit_per_kind_runs_only_the_kinds_it_names() -> None:
    probes = [_probe("tool", t, i) for t in ("calculator", "read_file") for i in range(5)]
    probes += [_probe("identity", "identity", i) for i in range(4)]
    only_tools = select(probes, {"tool": None})
    assert len(only_tools) == 10 and {p.kind for p in only_tools} == {"tool"}
    assert [p.id for p in select(probes, {"tool": 3, "identity": None})] == \
        [p.id for p in select(probes, 3) if p.kind == "tool"] + [p.id for p in select(probes, None) if p.kind == "identity"]


def test_empty_probe_set_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CodetteError, match="probe set is empty"):
        run_probes(Scripted(), [])
    (tmp_path / "test.jsonl").write_text(json.dumps({"category": "mixed", "messages": []}) + "\n")
    with pytest.raises(CodetteError, match="test.jsonl: no behavioral probes"):
        probe_set(tmp_path)
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(CodetteError, match="no behavioral probes"):
        probe_set(tmp_path)
    with pytest.raises(CodetteError, match="no probe source"):
        probe_set(tmp_path / "missing")
    with pytest.raises(CodetteError, match="probes come from a held-out split: val or test, not 'train'"):
        probe_set(tmp_path, split="train")


def test_bad_probe_records_name_the_file_and_line(tmp_path: Path) -> None:
    rec = {"category": "perspectives", "perspective": "astrology",
           "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.raises(CodetteError, match=r"test.jsonl:1: field 'perspective' is 'astrology'"):
        probe_set(tmp_path)
    (tmp_path / "val.jsonl").write_text("{not json\n")
    with pytest.raises(CodetteError, match=r"val.jsonl:1: not valid JSON"):
        probe_set(tmp_path, split="val")


# ---- with a trained tiny model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained 20 steps (model_final.pt) in a copy of the prepared folder."""
    out = tmp_path_factory.mktemp("eval_trained") / "run"
    shutil.copytree(prepared, out)
    cfg = tiny_config(out, **{"train.max_steps": 20, "train.eval_every": 20, "train.probes": 0})
    stages.run_train(cfg, QUIET)
    return out


@pytest.fixture(scope="module")
def other_tokenizer(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different tokenizer (another vocabulary size) trained on the same data, and the data packed with it."""
    out = tmp_path_factory.mktemp("other_tok")
    shutil.copytree(prepared / "data", out / "data")
    tok = stages.run_tokenizer(tiny_config(out, **{"tokenizer.vocab_size": 400}), QUIET)
    ensure_packed(out, tok, assistant_only=True)
    return out


@pytest.mark.slow
def test_checkpoint_tokenizer_mismatch_is_a_clear_error(trained: Path, other_tokenizer: Path) -> None:
    with pytest.raises(CodetteError, match="is not the tokenizer .* was trained with"):
        LocalBackend.from_checkpoint(trained / "model_final.pt", other_tokenizer)
    with pytest.raises(CodetteError, match="is not the tokenizer"):
        evaluate_checkpoint(trained / "model_final.pt", trained / "packed", tokenizer_dir=other_tokenizer,
                            probes_per_kind=0)


@pytest.mark.slow
def test_eval_cli_with_an_empty_probe_set_fails_clearly(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text(json.dumps({"category": "mixed", "messages": []}) + "\n")
    proc = codette("eval", str(trained / "model_final.pt"), "--probe-dir", str(tmp_path), "--max-batches", "1",
                   "--output", str(tmp_path / "eval.json"))
    assert proc.returncode == 2 and "error:" in proc.stderr and "no behavioral probes" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "eval.json").exists()


@pytest.mark.slow
def test_eval_reports_every_figure_with_n_and_interval(trained: Path) -> None:
    report = evaluate_checkpoint(trained / "model_final.pt", trained / "packed", max_batches=1, samples=1,
                                 probes_per_kind=2, max_new_tokens=8)
    for key in ("loss", "perplexity", "token_accuracy", "bits_per_byte", "tool_task_success",
                "consciousness_score", "perspective_adherence", "behavior_score"):
        assert key in report, key
    figs = report["behavior"]["figures"]
    assert figs["consciousness_score"]["n"] > 0
    for f in figs.values():
        assert set(f) == {"value", "n", "low", "high", "method"}
        assert f["n"] == 0 or 0.0 <= f["low"] <= f["value"] <= f["high"] <= 1.0
    assert 0 < report["bits_per_byte"] < report["loss"] / math.log(2)  # > 1 byte per target token


def _targets(packed: Path, split: str, seq_len: int) -> int:
    """Target tokens of every evaluation window of a packed split, counted independently of the evaluation."""
    windows = BatchSampler(PackedSplit(packed, split), seq_len, seed=0).sequential(16)
    return sum(int((y != IGNORE_INDEX).sum()) for _, y in windows)


@pytest.mark.slow
def test_eval_scores_the_test_split_unless_asked(trained: Path, tmp_path: Path) -> None:
    """Held-out figures come from the test split, which selection never reads; --split val asks for val."""
    ckpt = trained / "model_final.pt"
    seq_len = LocalBackend.from_checkpoint(ckpt).model.cfg.max_seq_len
    test = evaluate_checkpoint(ckpt, trained / "packed", samples=0, probes_per_kind=1, max_new_tokens=4)
    val = evaluate_checkpoint(ckpt, trained / "packed", samples=0, probes_per_kind=1, max_new_tokens=4, split="val")
    assert (test["split"], val["split"]) == ("test", "val")
    assert test["probes"]["source"] == str(trained / "data" / "test.jsonl")
    assert val["probes"]["source"] == str(trained / "data" / "val.jsonl")
    assert test["target_tokens"] == _targets(trained / "packed", "test", seq_len) > 0
    assert val["target_tokens"] == _targets(trained / "packed", "val", seq_len) != test["target_tokens"]
    with pytest.raises(CodetteError, match="--split must be one of val, test"):
        evaluate_checkpoint(ckpt, trained / "packed", probes_per_kind=0, samples=0, split="train")
    proc = codette("eval", str(ckpt), "--probes", "0", "--split", "val", "--output", str(tmp_path / "e.json"))
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "e.json").read_text())
    assert written["split"] == "val" and written["target_tokens"] == val["target_tokens"]
    assert "Language modelling (val split" in (tmp_path / "e.md").read_text()


@pytest.mark.slow
def test_training_and_selection_never_read_the_test_split(prepared: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop, its evaluations and the probes that pick model_best.pt open train and val only."""
    import codette.evaluate.probes as probes_mod
    import codette.evaluate.training as training_mod
    import codette.train as train_pkg

    splits, probe_files, opened = [], [], []
    real_init, real_load, real_open = PackedSplit.__init__, probes_mod.load_probes, builtins.open

    def spy_init(self, folder, name):
        splits.append(name)
        real_init(self, folder, name)

    def spy_load(path):
        probe_files.append(Path(path).name)
        return real_load(path)

    def spy_open(file, *args, **kwargs):
        opened.append(Path(file).name if isinstance(file, (str, Path)) else str(file))
        return real_open(file, *args, **kwargs)

    def watched(fn):
        def call(*args, **kwargs):
            with monkeypatch.context() as m:
                m.setattr(PackedSplit, "__init__", spy_init)
                m.setattr(probes_mod, "load_probes", spy_load)
                m.setattr(builtins, "open", spy_open)
                return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(train_pkg, "train", watched(train_pkg.train))
    monkeypatch.setattr(training_mod, "build_monitor", watched(training_mod.build_monitor))
    out = tmp_path / "run"
    shutil.copytree(prepared, out)
    cfg = tiny_config(out, **{"train.max_steps": 4, "train.eval_every": 2, "train.probes": 2,
                              "train.probe_budget": 1.0, "train.best_metric": "consciousness_score"})
    result = stages.run_train(cfg, QUIET)
    assert result.best_checkpoint is not None and (out / "packed" / "test.bin").is_file()
    assert "val" in splits and "train" in splits and "test" not in splits
    assert probe_files == ["val.jsonl"]
    assert not [name for name in opened if name.startswith("test.")]


@pytest.fixture(scope="module")
def gguf_file(trained: Path) -> Path:
    require("llama_cpp")
    from codette.export import export_gguf

    return export_gguf(trained / "model_final.pt", trained, "f32", force=True, modelfile=False).path


@pytest.mark.slow
def test_gguf_and_checkpoint_score_the_same_windows(trained: Path, gguf_file: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    import codette.backends.gguf as gguf_backend

    loads, reads = [], []
    real_llama, real_meta = llama_cpp.Llama, gguf_backend.gguf_metadata

    def counted_llama(*args, **kwargs):
        loads.append(kwargs.get("logits_all"))
        return real_llama(*args, **kwargs)

    def counted_meta(*args, **kwargs):
        reads.append(args)
        return real_meta(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", counted_llama)
    monkeypatch.setattr(gguf_backend, "gguf_metadata", counted_meta)
    pt = evaluate_path(trained / "model_final.pt", max_batches=2, probes_per_kind=0, samples=0)
    gg = evaluate_path(gguf_file, max_batches=2, probes_per_kind=0, samples=1)
    # One load serves both the LM metrics and the chats, and the metadata is read once.
    assert loads == [True] and len(reads) == 1
    assert len(gg["samples"]) == 1 and not gg["samples"][0]["assistant"].startswith("(no reply")
    assert gg["backend"] == "gguf" and gg["split"] == pt["split"] == "test"
    assert gg["target_tokens"] == pt["target_tokens"]
    assert gg["loss"] == pytest.approx(pt["loss"], abs=2e-3)
    assert gg["bits_per_byte"] == pytest.approx(pt["bits_per_byte"], abs=2e-3)


@pytest.mark.slow
def test_gguf_with_a_different_vocabulary_is_a_clear_error(trained: Path, gguf_file: Path, other_tokenizer: Path,
                                                           tmp_path: Path) -> None:
    from codette.backends.gguf import GGUFBackend

    with pytest.raises(CodetteError, match="not the same vocabulary|vocabulary differs"):
        GGUFBackend(gguf_file, tokenizer_dir=other_tokenizer)
    # the GGUF beside a folder whose tokenizer and packed data are another vocabulary's
    alien = tmp_path / "alien"
    shutil.copytree(other_tokenizer, alien)
    shutil.copy(gguf_file, alien / gguf_file.name)
    with pytest.raises(CodetteError, match="not the same vocabulary|vocabulary differs"):
        evaluate_path(alien / gguf_file.name, probes_per_kind=0, samples=0)
    with pytest.raises(CodetteError, match="not the same vocabulary|vocabulary differs"):
        with closing(GGUFBackend(gguf_file, logits_all=True)) as backend:
            gguf_lm_metrics(backend, alien / "packed")  # LM metrics on data packed with another tokenizer
    proc = codette("eval", str(alien / gguf_file.name), "--probes", "0")
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


# ---- probes during training -----------------------------------------------------------------------------
@pytest.mark.slow
def test_training_time_probes_do_not_change_training(prepared: Path, tmp_path: Path) -> None:
    """Same losses with and without probes (dropout on, so any stray random draw would show)."""
    runs = {}
    for name, probes in (("plain", 0), ("probed", 4)):
        out = tmp_path / name
        shutil.copytree(prepared, out)
        cfg = tiny_config(out, **{"train.max_steps": 12, "train.eval_every": 4, "train.probes": probes,
                                  "train.probe_budget": 1.0, "train.seq_len": 64, "model.max_seq_len": 256,
                                  "model.dropout": 0.1})
        stages.run_train(cfg, QUIET)
        runs[name] = out
    assert losses(runs["plain"] / "logs") == losses(runs["probed"] / "logs")
    evals = [json.loads(line) for f in (runs["probed"] / "logs").glob("metrics_*.jsonl")
             for line in f.read_text().splitlines() if json.loads(line)["kind"] == "eval"]
    assert len(evals) == 3 and sum(e["probe_n"] for e in evals) > 0
    assert any(k.endswith("_n") and k != "probe_n" for e in evals for k in e)
    a = torch.load(runs["plain"] / "model_final.pt", weights_only=False)["model"]
    b = torch.load(runs["probed"] / "model_final.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_monitor_keeps_to_its_time_budget(trained: Path) -> None:
    probes, _ = probe_set(trained / "data", per_kind=6)
    model = LocalBackend.from_checkpoint(trained / "model_final.pt").model
    mon = TrainingMonitor(CodetteTokenizer.load(trained), probes, budget=0.10, max_new_tokens=8)
    assert mon.on_eval(model, 1, train_seconds=0.0) == {"probe_n": 0, "probe_seconds": pytest.approx(0, abs=0.05),
                                                        "probe_overhead": 0.0}
    first = mon.on_eval(model, 2, train_seconds=100.0)  # a 10 s allowance: room for every probe
    assert first["probe_n"] == len(probes)
    mon2 = TrainingMonitor(CodetteTokenizer.load(trained), probes, budget=0.10, max_new_tokens=8)
    mon2.on_eval(model, 1, train_seconds=100.0)  # learns each kind's cost
    per_probe = mon2.spent / len(probes)
    spent = mon2.spent
    out = mon2.on_eval(model, 2, train_seconds=(spent + 2.5 * per_probe) / 0.10)
    assert 0 < out["probe_n"] < len(probes)  # a small allowance: a prefix of the probes, not all
    assert mon2.overhead <= 0.10 * 1.5
    with pytest.raises(CodetteError, match="probe_budget"):
        build_monitor(tiny_config(trained, **{"train.probe_budget": 2.0}).train, trained / "data",
                      CodetteTokenizer.load(trained), trained / "logs")
    with pytest.raises(CodetteError, match="behavioral metric"):
        build_monitor(tiny_config(trained, **{"train.best_metric": "consciousness_score",
                                              "train.probes": 0}).train, trained / "data",
                      CodetteTokenizer.load(trained), trained / "logs", required=needs_probes("consciousness_score"))


# ---- progress of every long stage of `codette eval` (the session's run_folder) ---------------------------
class Hello:
    """A backend that says hello to everything (no calls): the natural set runs through it in seconds."""

    name = "hello"

    def stream(self, messages, tools=None, sampling=None):
        yield Chunk("Hello.", finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None):
        return collect(self.stream(messages, tools, sampling)).text


@pytest.mark.slow
def test_eval_reports_progress_of_every_stage(run_folder: Path, tmp_path: Path) -> None:
    from codette.evaluate.run import _add_behavior, evaluate_path

    seen: dict[str, list[tuple[int, int]]] = {}

    def record(stage: str, done: int, total: int) -> None:
        seen.setdefault(stage, []).append((done, total))

    evaluate_path(run_folder / "model_best.pt", max_batches=2, batch_size=2, probes_per_kind=1, samples=2,
                  max_new_tokens=4, on_progress=record)
    assert seen["lm"] == [(1, 2), (2, 2)]
    assert seen["samples"] == [(1, 2), (2, 2)]
    n = len(seen["probes"])
    assert n > 0 and seen["probes"] == [(i, n) for i in range(1, n + 1)]

    seen.clear()
    _add_behavior({}, Hello(), tmp_path / "model.pt", None, 0, 16, 1, None, "test", natural=True,
                  on_progress=record)
    n = len(seen["natural"])
    assert n > 100 and seen["natural"] == [(i, n) for i in range(1, n + 1)] and seen["samples"] == [(1, 1)]


@pytest.mark.slow
def test_gguf_eval_reports_its_lm_progress(run_folder: Path, tmp_path: Path) -> None:
    from codette.evaluate.run import evaluate_path
    from codette.export import export_gguf
    from tests._runtimes import require

    require("llama_cpp")
    gguf_file = export_gguf(run_folder / "model_best.pt", tmp_path, "f32", modelfile=False).path
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(run_folder / name, tmp_path / name)
    seen: list[tuple[str, int, int]] = []
    evaluate_path(gguf_file, packed_dir=run_folder / "packed", max_batches=1, batch_size=3, probes_per_kind=0,
                  samples=1, max_new_tokens=4, on_progress=lambda *a: seen.append(a))
    assert seen == [("lm", 1, 3), ("lm", 2, 3), ("lm", 3, 3), ("samples", 1, 1)]


@pytest.mark.slow
def test_codette_eval_shows_a_bar_per_stage(run_folder: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    stages.run_eval(run_folder, console, output=tmp_path / "eval.json", max_batches=2, probes=1)
    text = out.getvalue()
    for label in ("test split: LM metrics", "behavioral probes", "sample chats"):
        assert label in text, label
