"""`codette serve`'s raw-text routes (codette.serve.rawtext): OpenAI's legacy /v1/completions with the official
`openai` client, llama-server's /tokenize and /detokenize; and the server's options (--ctx-size, --threads,
--model-alias). The scripted backend of tests/test_serve.py answers the protocol tests; an untrained checkpoint
and its GGUF (built in seconds on the session's small tokenizer) answer the ones that need a real tokenizer,
real model facts and llama.cpp's JSON grammar.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import torch

from codette.agent.markup import strip_markers
from codette.backends.base import SamplingConfig, collect
from tests._loopback import free_port
from tests.test_serve import Scripted, client, running
from tests.test_serve_ollama import RawScripted


# -- /v1/completions with the official client ----------------------------------------------------------
def test_openai_client_text_completions_whole_streamed_and_echoed():
    backend = RawScripted([" a time, there was a model. STOP and more"])
    with running(backend, model_name="codette-test") as url:
        c = client(url)
        r = c.completions.create(model="codette-test", prompt="Once upon", max_tokens=20, stop=["STOP"],
                                 temperature=0.1, top_p=0.5, seed=4, logprobs=2)
        (choice,) = r.choices
        assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "codette-test"
        assert choice.text == " a time, there was a model. " and choice.finish_reason == "stop"
        assert choice.logprobs is None  # accepted; no backend here reports them
        # the stop sequence ended the generation before the backend's counts: the prompt's are known (one token
        # per character here) and the reply's are counted from its text
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (9, 28)
        assert backend.prompts[-1][0] == [{"role": "raw", "content": "Once upon"}]  # no chat template
        s = backend.samplings[-1]
        assert (s.max_new_tokens, s.temperature, s.top_p, s.seed) == (20, 0.1, 0.5, 4)
        chunks = list(c.completions.create(model="codette-test", prompt="Once upon", stop="STOP", stream=True,
                                           stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == " a time, there was a model. "
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
        assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 28
        whole = c.completions.create(model="codette-test", prompt="Once upon", max_tokens=20)
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (11, 10)  # the backend's own counts
        echoed = c.completions.create(model="codette-test", prompt="Once upon", echo=True, stop=["STOP"])
        assert echoed.choices[0].text == "Once upon a time, there was a model. "
        c.completions.create(model="codette-test", prompt=[72, 105], max_tokens=3)  # token ids, as llama-server
        assert backend.prompts[-1][0][0]["content"] == "Hi" and backend.samplings[-1].max_new_tokens == 3


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"prompt": ["one", "two"]}, 400, "prompt: Value error, send one prompt per request"),
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt: the prompt is empty"),
    ({"prompt": "x", "suffix": "y"}, 400, "suffix: Value error, this model cannot fill in the middle"),
    ({"prompt": "x", "n": 2}, 400, "n:"),
    ({"prompt": "x" * 40}, 400, "the prompt is 40 tokens and this model's context is 32 tokens"),
    ({"prompt": [1, -5]}, 400, "token ids must be"),
])
def test_bad_completion_requests_get_a_400(body, status, needle):
    backend = RawScripted(["ok"], context_length=32)
    with running(backend) as url:
        r = httpx.post(url + "/v1/completions", json={"model": "codette", **body})
        assert r.status_code == status and needle in r.json()["error"]["message"], r.text
        assert backend.prompts == []


def test_routes_on_raw_text_need_a_tokenizer():
    with running(Scripted(["ok"])) as url:
        with pytest.raises(openai.APIStatusError) as info:
            client(url).completions.create(model="codette", prompt="Hi")
        assert info.value.status_code == 501 and info.value.body["code"] == "not_supported"
        r = httpx.post(url + "/tokenize", json={"content": "Hi"})
        assert r.status_code == 501 and "needs a local model" in r.json()["error"]["message"]


def test_tokenize_routes_keep_the_guard():
    with running(RawScripted(["ok"]), api_key="s3cret") as url:
        port = url.rsplit(":", 1)[1]
        assert httpx.post(url + "/tokenize", json={"content": "Hi"}).status_code == 401
        keyed = {"Authorization": "Bearer s3cret"}
        assert httpx.post(url + "/tokenize", json={"content": "Hi"}, headers=keyed).json() == {"tokens": [72, 105]}
        bad_host = httpx.post(url + "/detokenize", json={"tokens": [72]}, headers={**keyed, "Host": f"evil:{port}"})
        assert bad_host.status_code == 403
        with pytest.raises(openai.AuthenticationError):
            client(url).completions.create(model="codette", prompt="Hi")


# -- a real tokenizer and model: an untrained checkpoint and its GGUF ----------------------------------------
@pytest.fixture(scope="module")
def random_model(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained llama-block checkpoint (d_model 64, context 128) beside the session's small tokenizer."""
    from codette.checkpoint import save_checkpoint
    from codette.model import CodetteModel, ModelConfig
    from codette.model.config import padded_vocab

    folder = tmp_path_factory.mktemp("random_model")
    tokenizer.save(folder)
    cfg = ModelConfig(vocab_size=padded_vocab(len(tokenizer)), d_model=64, n_layers=2, n_heads=4, max_seq_len=128,
                      block_style="llama", extra={"preset": "random"})
    torch.manual_seed(0)
    path = folder / "model_random.pt"
    save_checkpoint({"model": CodetteModel(cfg).state_dict(), "model_config": dataclasses.asdict(cfg), "step": 0},
                    path)
    return path


TEXT = "<|im_start|>user\nHello, Codette! What is 6 * 7?<|im_end|>\n"


def test_a_checkpoint_through_tokenize_completions_generate_chat_and_show(random_model):
    from codette.backends.local import LocalBackend

    backend = LocalBackend.from_checkpoint(random_model)
    ids = backend.tokenize(TEXT)
    with running(backend, model_name="random") as url:
        tokens = httpx.post(url + "/tokenize", json={"content": TEXT}).json()["tokens"]
        assert tokens == ids == backend.tokenizer.encode(TEXT) and backend.tokenizer.token_id("<|im_start|>") in ids
        assert httpx.post(url + "/detokenize", json={"tokens": tokens}).json() == {"content": TEXT}
        pieces = httpx.post(url + "/tokenize", json={"content": "Hello, Codette!", "with_pieces": True}).json()
        assert "".join(p["piece"] for p in pieces["tokens"]) == "Hello, Codette!"
        assert [p["id"] for p in pieces["tokens"]] == backend.tokenize("Hello, Codette!")
        bad = httpx.post(url + "/detokenize", json={"tokens": [0, 10_000]})
        assert bad.status_code == 400 and "token ids must be 0 to" in bad.json()["error"]["message"]
        # The same seeded continuation through the backend, OpenAI's completions and Ollama's raw generate.
        expected = collect(backend.stream_tokens(ids, SamplingConfig(max_new_tokens=6, temperature=1.0, seed=7)))
        assert expected.text.strip() and expected.completion_tokens == 6  # an untrained model: 6 random tokens
        r = client(url).completions.create(model="random", prompt=TEXT, max_tokens=6, temperature=1.0, seed=7)
        assert r.choices[0].text == expected.text and r.choices[0].finish_reason == "length"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), 6)
        c = ollama.Client(host=url, timeout=60)
        g = c.generate(model="random", prompt=TEXT, raw=True, options={"temperature": 1.0, "seed": 7,
                                                                        "num_predict": 6})
        assert g.response == expected.text and g.done_reason == "length"
        assert (g.prompt_eval_count, g.eval_count) == (len(ids), 6)
        msgs = [{"role": "user", "content": "Who are you?"}]
        chat = c.chat(model="random", messages=msgs, options={"temperature": 0, "num_predict": 8})
        own = backend.chat(msgs, None, SamplingConfig(max_new_tokens=8, temperature=0))
        assert chat.message.content == strip_markers(own)[0].strip()
        assert chat.prompt_eval_count == backend.count_tokens(msgs)
        shown = c.show("random")
        d = shown.details
        assert (d.format, d.family, d.quantization_level) == ("pytorch", "llama", "F32")
        assert shown.modelinfo["general.parameter_count"] == backend.model.num_parameters()
        assert shown.modelinfo["llama.context_length"] == 128 and shown.template == backend.tokenizer.chat_template
        assert c.list().models[0].size == random_model.stat().st_size


def test_a_gguf_with_ctx_size_threads_and_a_json_schema(random_model, tmp_path):
    """llama.cpp constrains the reply to the schema: an untrained model writes valid JSON only because of it."""
    from codette.backends.gguf import GGUFBackend
    from codette.export.gguf_export import export_gguf
    from codette.serve.run import load_backend

    gguf_path = export_gguf(random_model, tmp_path, "f32", modelfile=False).path
    backend = load_backend(str(gguf_path), "cpu", ctx_size=96, threads=1)
    try:
        assert isinstance(backend, GGUFBackend) and backend.llm.n_ctx() >= 96
        with running(backend, model_name="random-gguf", ctx_size=96) as url:
            assert httpx.get(url + "/v1/models").json()["data"][0]["context_length"] == 96
            assert httpx.post(url + "/tokenize", json={"content": TEXT}).json()["tokens"] == backend.tokenize(TEXT)
            c = ollama.Client(host=url, timeout=120)
            d = c.show("random-gguf").details
            assert (d.format, d.family, d.quantization_level) == ("gguf", "llama", "F32")
            schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
            r = c.chat(model="random-gguf", messages=[{"role": "user", "content": "Yes or no?"}], format=schema,
                       options={"temperature": 0, "num_predict": 60})
            assert json.loads(r.message.content)["answer"] in ("yes", "no"), r.message.content
            assert r.done_reason == "stop"
    finally:
        backend.close()


def test_ctx_size_and_the_alias_apply_to_every_api():
    backend = RawScripted(["ok"], context_length=64)
    with running(backend, model_name="codette_model", model_alias="codette", ctx_size=40) as url:
        models = httpx.get(url + "/v1/models").json()["data"]
        assert [(m["id"], m["context_length"]) for m in models] == [("codette", 40)]
        assert ollama.Client(host=url).show("codette").modelinfo == {}  # a scripted model has no facts to report
        r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 200}]})
        assert r.status_code == 400 and "this model's context is 40 tokens" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "x" * 30, "max_tokens": 100})
        assert r.status_code == 200 and backend.samplings[-1].max_new_tokens == 10


def test_serve_loads_a_checkpoint_with_threads(random_model):
    from codette.serve.run import load_backend

    before = torch.get_num_threads()
    try:
        backend = load_backend(str(random_model), "cpu", threads=1)
        assert backend.name == "local" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_codette_serve_cli_passes_the_new_options(random_model):
    """The command line as a user types it: alias, context, threads and metrics reach the running server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codette", "serve", str(random_model), "--port", str(port),
                             "--model-alias", "tiny-random", "--ctx-size", "64", "--threads", "1", "--metrics"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"codette serve did not start:\n{proc.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        c = ollama.Client(host=url, timeout=60)
        assert [m.model for m in c.list().models] == ["tiny-random:latest"]
        assert c.show("tiny-random").modelinfo["llama.context_length"] == 64
        r = c.generate(model="tiny-random", prompt="Hi", options={"num_predict": 3, "temperature": 0})
        assert r.done and r.eval_count <= 3
        metrics = httpx.get(url + "/metrics").text
        assert 'codette_requests_total{endpoint="/api/generate",status="200"} 1.0' in metrics
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"serving {random_model} as 'tiny-random' (local backend)" in out and "metrics at /metrics" in out
