"""The user's own data: tool-call validation, --skip-bad, non-UTF-8, datasets/parquet/JSON, --mix, streaming.

tests/test_data.py covers missing, empty, binary and malformed files; here are the newer checks and
the memory test (a ~100 MB text file must stream: the build's memory does not grow with the file).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from codette.config import DataConfig
from codette.data.build import build_dataset, read_split
from codette.data.split import SPLITS
from codette.data.mix import parse_mix, selection, take, target_counts
from codette.data.sources import ReadReport, iter_documents, iter_text, iter_text_documents
from codette.errors import CodetteError
from tests._pipeline import codette

CALC = {"type": "function", "function": {"name": "calculator", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


def _chat(i: int = 0) -> dict:
    return {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}


def _tool_chat(name: str = "calculator", arguments: object = '{"expression": "2 + 2"}', tools: list | None = None) -> dict:
    rec = {"messages": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"result": 4}'},
        {"role": "assistant", "content": "2 + 2 = 4."}]}
    if tools is not None:
        rec["tools"] = tools
    return rec


def _write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def _error(path: Path, **kw) -> str:
    with pytest.raises(CodetteError) as exc:
        list(iter_documents(path, **kw))
    return str(exc.value)


# ------------------------------------------------------------------------------------------------
# OpenAI tool calls
# ------------------------------------------------------------------------------------------------
def test_openai_tool_calls_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "chat.jsonl", [_tool_chat(tools=[CALC]), _tool_chat(arguments={"expression": "1"})])
    docs = list(iter_documents(path))
    assert len(docs) == 2 and docs[0].tools == [CALC] and docs[1].tools is None


@pytest.mark.parametrize(("record", "words"), [
    (_tool_chat(name="weather", tools=[CALC]), ["unknown tool 'weather'", "calculator"]),
    (_tool_chat(arguments='{"expression": 4}', tools=[CALC]), ["calculator", "expression"]),
    (_tool_chat(arguments="{not json"), ["not valid JSON"]),
    (_tool_chat(arguments="[1, 2]"), ["must be a JSON object"]),
])
def test_bad_tool_calls_name_file_and_line(tmp_path: Path, record: dict, words: list[str]) -> None:
    path = _write(tmp_path / "chat.jsonl", [_chat(), record])
    msg = _error(path)
    assert f"{path}:2" in msg
    for w in words:
        assert w in msg


def test_undeclared_tool_calls_must_name_one_of_codettes_tools(tmp_path: Path) -> None:
    # No 'tools' in the record: a call to a tool Codette does not have is an error naming file:line ...
    path = _write(tmp_path / "chat.jsonl", [_chat(), _tool_chat(), _tool_chat(name="get_weather")])
    msg = _error(path)
    assert f"{path}:3" in msg and "unknown tool 'get_weather'" in msg and "read_file" in msg
    # ... and a call to one of Codette's tools must match that tool's real schema.
    msg = _error(_write(tmp_path / "args.jsonl", [_tool_chat(arguments='{"expr": "2 + 2"}')]))
    assert ":1" in msg and "calculator" in msg and "expression" in msg
    report = ReadReport()
    assert len(list(iter_documents(path, skip_bad=True, report=report))) == 2 and report.skipped == 1


def test_tool_result_without_a_call_is_an_error(tmp_path: Path) -> None:
    rec = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"},
                        {"role": "assistant", "content": "y"}]}
    msg = _error(_write(tmp_path / "chat.jsonl", [rec]))
    assert ":1" in msg and "without a preceding tool call" in msg


# ------------------------------------------------------------------------------------------------
# --skip-bad, unknown roles, empty corpora, non-UTF-8
# ------------------------------------------------------------------------------------------------
def test_skip_bad_counts_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = [_chat(1), "{oops", {"messages": [{"role": "robot", "content": "x"}]}, _chat(2),
             _tool_chat(name="nope", tools=[CALC]), _chat(3)]
    path = _write(tmp_path / "chat.jsonl", lines)
    assert f"{path}:2" in _error(path)
    report = ReadReport()
    docs = list(iter_documents(path, skip_bad=True, report=report))
    assert [d.messages[0]["content"] for d in docs] == ["hi 1", "hi 2", "hi 3"]
    assert report.skipped == 3
    assert [e.split(": ")[0] for e in report.examples] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert "'robot'" in report.examples[1]
    stats = build_dataset(DataConfig(synthetic=False, sources=[str(path)], skip_bad=True), tmp_path / "data")
    assert stats.skipped_bad == 3 and stats.user_documents == 3


def test_skip_bad_with_nothing_left_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "chat.jsonl", ["{bad", "[1]"])
    msg = _error(path, skip_bad=True)
    assert "no conversations" in msg and "2 bad lines skipped" in msg


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CodetteError, match="empty"):
        build_dataset(DataConfig(synthetic=False, sources=[str(empty)]), tmp_path / "data")
    with pytest.raises(CodetteError, match="nothing to build"):
        build_dataset(DataConfig(synthetic=False), tmp_path / "data")


def test_non_utf8_across_chunk_boundaries(tmp_path: Path) -> None:
    text = "".join(f"line {i} caf\u00e9 \u65e5\u672c \U0001F600\n" for i in range(200))
    path = tmp_path / "u.txt"
    path.write_bytes(text.encode("utf-8"))
    for chunk in (1, 3, 7, 64):  # multi-byte characters split by every possible chunk edge
        assert "".join(iter_text(path, chunk=chunk)) == text
    bad = tmp_path / "bad.txt"
    head = text[:1000].encode("utf-8")
    bad.write_bytes(head + b"\xff" + b"tail\n")
    line = head.count(b"\n") + 1
    for chunk in (7, 1 << 20):
        with pytest.raises(CodetteError) as exc:
            list(iter_text(bad, chunk=chunk))
        assert f"{bad}:{line}: invalid UTF-8 at byte {len(head)};" in str(exc.value)
        assert "--errors replace" in str(exc.value)
    assert "\ufffdtail" in "".join(iter_text(bad, errors="replace", chunk=7))


def test_cli_non_utf8_error_and_skip_bad(tmp_path: Path) -> None:
    latin = tmp_path / "notes.txt"
    latin.write_bytes(("Some notes. " * 40 + "\n").encode() + b"caf\xe9\n")
    proc = codette("data", "-o", str(tmp_path / "a"), "--no-synthetic", "-s", str(latin))
    assert proc.returncode == 2 and f"{latin}:2: invalid UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    assert "--errors replace" in proc.stderr
    chat = _write(tmp_path / "chat.jsonl", [_chat(i) for i in range(20)] + ["{bad"])
    proc = codette("data", "-o", str(tmp_path / "b"), "--no-synthetic", "-s", str(chat), "--skip-bad", check=True)
    assert json.loads((tmp_path / "b" / "data" / "stats.json").read_text())["skipped_bad"] == 1


# ------------------------------------------------------------------------------------------------
# --mix
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "words"), [
    ("synthetic=0.5,my.jsonl=0.4", ["sum to 1", "0.9"]),
    ("synthetic=0.7,my.jsonl=0.7", ["sum to 1"]),
    ("synthetic=half", ["must be a number"]),
    ("synthetic", ["NAME=RATIO"]),
    ("a=0.5,a=0.5", ["twice"]),
])
def test_mix_specs_are_checked(spec: str, words: list[str]) -> None:
    with pytest.raises(CodetteError) as exc:
        parse_mix(spec)
    for w in words:
        assert w in str(exc.value)


def test_mix_counts_and_selection() -> None:
    assert parse_mix("synthetic=0.5, my.jsonl=0.5") == {"synthetic": 0.5, "my.jsonl": 0.5}
    assert target_counts({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 100) == {"a": 34, "b": 33, "c": 33}
    picks = selection(10, 25, seed=0, name="x")  # upsampled: every document twice, five three times
    assert sum(picks.values()) == 25 and sorted(set(picks.values())) == [2, 3]
    assert list(take(range(10), {3: 1, 5: 2})) == [3, 5, 5]
    assert selection(1000, 10, 0, "x") == selection(1000, 10, 0, "x") != selection(1000, 10, 1, "x")


def test_mix_builds_the_requested_ratios(tmp_path: Path) -> None:
    chat = _write(tmp_path / "mine.jsonl", [_chat(i) for i in range(40)])
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(f"paragraph {i}" for i in range(5)))
    cfg = DataConfig(samples=200, mix={"synthetic": 0.5, str(chat): 0.3, str(notes): 0.2})
    stats = build_dataset(cfg, tmp_path / "data")
    assert stats.train + stats.val + stats.test == 200
    assert stats.synthetic["distinct"] == 100
    assert stats.sources == {str(chat): {"available": 40, "used": 60}, str(notes): {"available": 1, "used": 40}}
    docs = [d for split in SPLITS for d in read_split(tmp_path / "data", split)]
    assert sum(d.text is not None for d in docs) == 40
    with pytest.raises(CodetteError, match="has no ratio in --mix"):
        build_dataset(DataConfig(sources=[str(notes)], mix={"synthetic": 1.0}), tmp_path / "x")
    proc = codette("data", "-o", str(tmp_path / "c"), "--mix", f"synthetic=0.5,{chat}=0.4")
    assert proc.returncode == 2 and "must sum to 1" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Hugging Face datasets, parquet and JSON
# ------------------------------------------------------------------------------------------------
def test_hf_dataset_parquet_and_json_sources(tmp_path: Path) -> None:
    import datasets  # the dev extra installs it: this test must run, not skip
    rows = [_tool_chat(tools=[CALC]), _chat(1), {"messages": _chat(2)["messages"]}]
    for r in rows:  # Arrow needs one schema per column; OpenAI-style string arguments keep it simple
        r.setdefault("tools", [])
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "hf"))
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "hfdict"))
    ds.to_parquet(str(tmp_path / "chat.parquet"))
    (tmp_path / "text.json").write_text(json.dumps([{"text": "first"}, {"text": "second"}]))
    docs = list(iter_documents(tmp_path / "hf"))
    assert [d.messages[-1]["content"] for d in docs] == ["2 + 2 = 4.", "hello 1", "hello 2"]
    assert docs[0].tools[0]["function"]["name"] == "calculator" and "content" not in docs[0].messages[1]
    assert len(list(iter_documents(tmp_path / "hfdict"))) == 4
    assert [d.messages[0]["content"] for d in iter_documents(tmp_path / "chat.parquet")][1:] == ["hi 1", "hi 2"]
    assert [d.text for d in iter_documents(tmp_path / "text.json")] == ["first", "second"]
    bad = datasets.Dataset.from_list([{"prompt": "x"}])
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    msg = _error(tmp_path / "bad.parquet")
    assert "bad.parquet:row 1" in msg and "'messages' or a 'text' column" in msg


# ------------------------------------------------------------------------------------------------
# Streaming large text
# ------------------------------------------------------------------------------------------------
def test_long_text_is_cut_into_documents_that_join_back(tmp_path: Path) -> None:
    rng = random.Random(0)
    text = "".join(" ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(rng.randint(5, 80)))
                   + ("\n\n" if rng.random() < 0.7 else "\n") for _ in range(400))
    path = tmp_path / "long.txt"
    path.write_text(text)
    docs = list(iter_text_documents(path, max_chars=2000))
    assert len(docs) > 5 and "".join(d.text for d in docs) == text
    assert all(len(d.text) <= 2000 for d in docs)
    assert all(d.text.endswith("\n") for d in docs[:-1])  # cut at paragraph or line ends


MEMORY_SCRIPT = r"""
import json, sys
from pathlib import Path
from codette.config import DataConfig
from codette.data.build import build_dataset
from codette.data.pack import pack
from codette.data.build import read_split
from codette.tokenizer import CodetteTokenizer

def status_mb(field):
    # VmHWM, not ru_maxrss: Linux carries the parent's RSS at fork into a child's ru_maxrss across exec.
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

src, out = Path(sys.argv[1]), Path(sys.argv[2])
tok = CodetteTokenizer.train([src.open().read(100_000)], vocab_size=400)
base = status_mb("VmHWM")
stats = build_dataset(DataConfig(synthetic=False, sources=[str(src)]), out)
build_peak = status_mb("VmHWM")
packed = pack(read_split(out, "val"), tok, out, "val")
peak = status_mb("VmHWM")
print(json.dumps({"base": base, "build_peak": build_peak, "peak": peak, "docs": stats.train + stats.val,
                  "val_tokens": packed.tokens}))
"""


def test_a_100_mb_text_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    rng = random.Random(1)
    words = "the of and to in is was for on that with as by at from this are be or it".split()
    paragraphs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 150))) + ".\n\n" for _ in range(500)]
    src = tmp_path / "corpus.txt"
    with src.open("w") as fh:
        while fh.tell() < 100 * 2**20:
            fh.write("".join(rng.choices(paragraphs, k=50)))
    size_mb = src.stat().st_size / 2**20
    assert size_mb > 95
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(src), str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["peak"] < 1024, m  # the brief: under 1 GB
    assert m["build_peak"] - m["base"] < 0.5 * size_mb, m  # reading a whole file would need > size_mb
    assert m["docs"] > 5000 and m["val_tokens"] > 0
