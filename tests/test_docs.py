"""The docs say what the code does: the numbers and commands they print are the recipe's."""

from __future__ import annotations

from pathlib import Path

from codette.config import QUICKSTART, build_config

ROOT = Path(__file__).resolve().parents[1]


def test_training_guide_stages_use_the_quickstart_recipe(tmp_path: Path) -> None:
    """The guide's first block runs the stages with a config file it shows; that file is the quickstart's."""
    import re

    guide = (ROOT / "docs" / "TRAINING_GUIDE.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n# quickstart\.toml\n(.*?)```", guide, re.S)
    assert block, "docs/TRAINING_GUIDE.md lost its quickstart.toml block"
    (tmp_path / "quickstart.toml").write_text(block.group(1))
    shown = build_config(tmp_path / "quickstart.toml", {"out_dir": "x"})
    assert shown == QUICKSTART.build(None, {"out_dir": "x"})


def test_quick_start_troubleshooting_states_the_recipe_tokens() -> None:
    cfg = QUICKSTART.build()
    steps, batch, ctx = cfg.train.max_steps, cfg.train.batch_size, cfg.model.max_seq_len
    text = (ROOT / "docs" / "QUICK_START.md").read_text(encoding="utf-8")
    assert f"{steps} x {batch} x {ctx}" in text and f"{steps * batch * ctx / 1e6:.1f}M tokens" in text


def test_no_doc_calls_llama_cpp_server_without_the_context() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "-m llama_cpp.server --model" in line:
                assert "--n_ctx" in line, f"{path.name}: {line}"
