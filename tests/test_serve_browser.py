"""The web chat page in a real browser: Debian's Chromium, driven by Playwright, against `codette serve`.

The model is trained in this run (about 15 s): a tiny Codette that has learned one tool conversation
("What is 12 * 34?" -> a calculator call -> an answer with the result), so the page shows a real
model's streamed reply and a real tool call, run by the server's agent with the real calculator.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from codette.persona import DEFAULT_SYSTEM
from codette.tooltable import tool_schema
from tests._pipeline import QUIET
from tests.test_serve import running

CHROMIUM = os.environ.get("CODETTE_CHROMIUM", "/usr/bin/chromium")
# As root in a container Chromium needs --no-sandbox; the rest keep it off this machine's closed network.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = "What is 12 * 34?"


def chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed: the chat page is tested in a real browser; `make test` installs it "
                    "(Debian package chromium), or set CODETTE_CHROMIUM", pytrace=False)
    return path


@pytest.fixture(scope="module")
def calculator_model(tmp_path_factory) -> Path:
    """A checkpoint trained on the agent's exact prompt for one question (so its call is known)."""
    from codette.cli import stages
    from codette.config import build_config

    root = tmp_path_factory.mktemp("page_model")
    tools = [tool_schema("calculator")]
    m = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": QUESTION},
         {"role": "assistant", "content": None, "tool_calls": [
             {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "12 * 34"}}}]},
         {"role": "tool", "content": '{"expression": "12 * 34", "result": 408}'}]
    # Documents are split by content, so each one differs in its last words (all carry the result).
    docs = [{"messages": m + [{"role": "assistant", "content": f"12 * 34 = 408, result {i}."}], "tools": tools}
            for i in range(60)]
    source = root / "chats.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    cfg = build_config(None, {"out_dir": str(root / "run"), "log_dir": str(root / "run" / "logs")}, defaults={
        "data": {"synthetic": False, "sources": [str(source)], "seed": 0},
        "tokenizer": {"vocab_size": 400},
        "model": {"preset": "tiny", "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 320},
        "train": {"lr": 3e-3, "warmup_steps": 10, "max_steps": 150, "eval_every": 150, "save_every": 150,
                  "batch_size": 4, "eval_batches": 1, "log_every": 50, "threads": 1, "seed": 7,
                  "keep_checkpoints": 1}})
    stages.run_data(cfg, QUIET)
    stages.run_tokenizer(cfg, QUIET)
    return Path(stages.run_train(cfg, QUIET).final_checkpoint)


@pytest.mark.slow
def test_chat_page_streams_a_reply_with_a_tool_card(calculator_model, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from codette.backends.local import LocalBackend

    backend = LocalBackend.from_checkpoint(calculator_model)
    with running(backend, model_name="page-test", workspace=tmp_path / "ws", agent_tools=["calculator"]) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            expect(page.locator("#model-name")).to_contain_text("page-test")
            expect(page.locator("#model-name")).to_contain_text("tools: calculator")
            options = page.locator("#perspective option")
            assert options.count() == 12 and "Newton" in options.all_text_contents()  # none + the eleven
            assert page.locator("#tools").is_checked()

            page.fill("#prompt", QUESTION)
            page.click("#send")
            card = page.locator(".msg.assistant .tool-card")
            expect(card.locator(".tool-result")).to_contain_text('"result": 408', timeout=60_000)
            expect(card.locator(".tool-name")).to_have_text("calculator")
            assert json.loads(card.locator(".tool-args").inner_text()) == {"expression": "12 * 34"}
            expect(card.locator(".tool-seconds")).to_contain_text(" s")
            meta = page.locator(".msg.assistant .meta .metrics")
            expect(meta).to_contain_text("tokens", timeout=60_000)
            expect(meta).to_contain_text("1 tool round")
            reply = page.locator(".msg.assistant .reply").last
            expect(reply).to_contain_text("12 * 34 = 408")
            assert page.locator(".msg.user").inner_text() == QUESTION
            expect(page.locator("#send")).to_be_enabled()
            page.screenshot(path=str(tmp_path / "page.png"))

            # The next turn carries the history; with tools switched off no card appears.
            page.uncheck("#tools")
            page.fill("#prompt", "Thanks!")
            page.press("#prompt", "Enter")  # Enter sends
            expect(page.locator(".msg.assistant .meta .metrics")).to_have_count(2, timeout=60_000)
            assert page.locator(".msg.assistant").nth(1).locator(".tool-card").count() == 0
            assert not errors, errors
        finally:
            browser.close()
