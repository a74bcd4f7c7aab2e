"""The Ollama ``Modelfile``: the GGUF, a Go-template twin of the chat template, stop strings, persona.

:data:`GO_TEMPLATE` renders what :data:`codette.tokenizer.chat_template.CHAT_TEMPLATE` renders, for
the way Ollama calls a template: ``.System`` is the system message, ``.Messages`` the conversation,
``.Tools`` the tool list, and the prompt always ends ready for the assistant (a final assistant
message is left open so Ollama can continue it, as its own templates do). Tools are written as one
signature line each, the same text in both templates. One unavoidable difference: Ollama's ``json``
function writes Go's ``json.Marshal`` (``{"a":1}``: compact, object keys sorted, ``<>&`` escaped)
where our Jinja ``tojson`` writes ``{"a": 1}`` in the call's order, so past tool-call arguments are the
same JSON values spelled differently. tests/test_modelfile.py renders this template with Go's own
``text/template``.

The template has no trim markers: every character outside ``{{ }}`` is output as written. Inside
``range .ToolCalls`` the first text is ``<tool_call>``: Ollama reads its tool-call tag from there.
Helper conditions use ``$m.ToolCalls`` (a variable), not ``.ToolCalls``, so Ollama's tag search
finds the right block.
"""

from __future__ import annotations

from pathlib import Path

from codette.errors import CodetteError
from codette.fileio import atomic_write_text
from codette.persona import DEFAULT_SYSTEM
from codette.tokenizer.chat_template import BOS, EOS, IM_END

MODELFILE_NAME = "Modelfile"
DEFAULT_TEMPERATURE = 0.7

# One line per tool, `name(param: type, ...): description`, parameters in key order (Go ranges over a map
# sorted by key; the Jinja template sorts them the same way) and types through Ollama's toTypeScriptType.
_TOOLS_PREAMBLE = (
    "# Tools\n\nYou can call these functions:"
    "{{ range .Tools }}\n- {{ .Function.Name }}({{ $first := true }}"
    "{{ range $k, $p := .Function.Parameters.Properties }}{{ if not $first }}, {{ end }}{{ $first = false }}"
    "{{ $k }}: {{ toTypeScriptType $p }}{{ end }})"
    "{{ if .Function.Description }}: {{ .Function.Description }}{{ end }}{{ end }}\n\n"
    "To call a function, answer with a JSON object inside <tool_call></tool_call> tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call>'
)

GO_TEMPLATE = (
    BOS
    # System turn: the persona plus, when tools are offered, their signatures.
    + "{{ if .Tools }}<|im_start|>system\n{{ if .System }}{{ .System }}\n\n{{ end }}"
    + _TOOLS_PREAMBLE + "<|im_end|>\n"
    + "{{ else if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    # The conversation (system messages are already in .System).
    + "{{ range $i, $m := .Messages }}"
    + '{{ if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}'
    + "{{ if and $m.Content $m.ToolCalls }}\n{{ end }}"
    + "{{ if .ToolCalls }}{{ range $j, $tc := .ToolCalls }}"
    + '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}\n</tool_call>'
    + "{{ if gt (len (slice $m.ToolCalls $j)) 1 }}\n{{ end }}{{ end }}{{ end }}"
    + "{{ if gt (len (slice $.Messages $i)) 1 }}<|im_end|>\n{{ end }}"
    + '{{ else if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    # Generation prompt, unless the last message is an assistant turn to be continued.
    + '{{ if and (eq (len (slice $.Messages $i)) 1) (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}'
    + "{{ end }}"
)

STOP_STRINGS = (IM_END, EOS)


def _triple_quoted(value: str, what: str) -> str:
    """A Modelfile multi-line value; the parser ends it at the first ``\"\"\"``, so that may not occur inside."""
    if '"""' in value:
        raise CodetteError(f"the Modelfile {what} may not contain three double quotes in a row")
    return '"""' + value + '"""'


def _quoted(value: str, what: str) -> str:
    if '"' in value or "\n" in value:
        raise CodetteError(f"the Modelfile {what} {value!r} may not contain a double quote or a newline")
    return f'"{value}"'


def ollama_command(modelfile_name: str = MODELFILE_NAME) -> str:
    """The commands that load a Modelfile into Ollama, run in its folder: ``codette`` for ``Modelfile``,
    ``codette:<quant>`` for ``Modelfile.<quant>``."""
    tag = modelfile_name[len(MODELFILE_NAME):].lstrip(".") if modelfile_name.startswith(MODELFILE_NAME) else ""
    model = f"codette:{tag}" if tag else "codette"
    return f"ollama create {model} -f {modelfile_name} && ollama run {model}"


def modelfile_gguf(path: Path) -> str | None:
    """The GGUF file name a Modelfile's ``FROM ./NAME`` line names (None when unreadable or absent)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("FROM "):
            return line[len("FROM "):].strip().removeprefix("./")
    return None


def modelfile_target(folder: Path, gguf_name: str, quant: str) -> tuple[Path, Path | None]:
    """Where the Modelfile of ``gguf_name`` goes, and the Modelfile left as it is (None if none).

    ``Modelfile`` when the folder has none or it already names this GGUF. A ``Modelfile`` that names
    another GGUF (the quickstart's F16, say) belongs to that file and is never replaced: this export's
    Modelfile is ``Modelfile.<quant>`` beside it, so a second quantisation of a model just works.
    """
    default = folder / MODELFILE_NAME
    if not default.exists() or modelfile_gguf(default) == gguf_name:
        return default, None
    return folder / f"{MODELFILE_NAME}.{quant}", default


def render_modelfile(gguf_name: str, num_ctx: int, system: str | None = None,
                     temperature: float = DEFAULT_TEMPERATURE, modelfile_name: str = MODELFILE_NAME) -> str:
    """Modelfile text for ``ollama create NAME -f <modelfile_name>`` run in the folder of the GGUF."""
    system = DEFAULT_SYSTEM if system is None else system
    lines = [
        "# Codette for Ollama, written by `codette export`.",
        f"#   {ollama_command(modelfile_name)}",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_triple_quoted(GO_TEMPLATE, 'template')}",
        f"SYSTEM {_triple_quoted(system, 'system message')}",
        *[f"PARAMETER stop {_quoted(s, 'stop string')}" for s in STOP_STRINGS],
        f"PARAMETER temperature {temperature:g}",
        f"PARAMETER num_ctx {int(num_ctx)}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, gguf_name: str, num_ctx: int, system: str | None = None) -> Path:
    atomic_write_text(path, render_modelfile(gguf_name, num_ctx, system, modelfile_name=path.name))
    return path

