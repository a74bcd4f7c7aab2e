"""What ``codette serve`` says about its model: the OpenAI model card and Ollama's /api/tags, /api/show
and /api/ps entries, built from one set of facts.

The facts are the model's own: a backend's ``model_facts()`` (the checkpoint's config, or the GGUF's
metadata: architecture, parameter count, file type, chat template) and the context the server allows.
A backend without them (an upstream HTTP server) reports its name and leaves the rest empty rather
than guessing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


def tagged(name: str) -> str:
    """Ollama's full model name: ``codette`` -> ``codette:latest`` (a name with a tag is kept)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def rfc3339(when: datetime) -> str:
    """A UTC time as Ollama writes it (``2025-01-02T03:04:05.123456Z``)."""
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parameter_size(count: int | None) -> str:
    """``3_211_264`` -> ``3.2M``, as Ollama shows parameter counts."""
    if not count:
        return ""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


@dataclass(frozen=True)
class ModelInfo:
    """The served model's facts (None or empty where the backend does not know them)."""

    name: str
    format: str
    family: str
    parameter_count: int | None
    quantization: str
    context_length: int | None
    template: str
    size: int
    modified: datetime
    digest: str

    @classmethod
    def of(cls, backend: Any, name: str, context: int | None) -> ModelInfo:
        """The facts of ``backend`` served as ``name`` with ``context`` tokens."""
        describe = getattr(backend, "model_facts", None)
        facts: dict[str, Any] = describe() if callable(describe) else {}
        path = facts.get("file")
        size, modified = 0, datetime.now(timezone.utc)
        if path and os.path.isfile(path):
            stat = os.stat(path)
            size, modified = stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)
        # Names the file (path, size, time), without hashing what may be gigabytes at every start.
        digest = hashlib.sha256(f"{path or name}:{size}:{modified.timestamp()}".encode()).hexdigest()
        return cls(name=name, format=str(facts.get("format") or getattr(backend, "name", "")),
                   family=str(facts.get("family") or ""), parameter_count=facts.get("parameter_count"),
                   quantization=str(facts.get("quantization") or ""), context_length=context,
                   template=str(facts.get("template") or ""), size=size, modified=modified, digest=digest)

    def accepts(self, name: str | None) -> bool:
        """Whether a request's model name names this model (``codette`` and ``codette:latest`` alike)."""
        return bool(name) and tagged(name) == tagged(self.name)

    def details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": self.format, "family": self.family,
                "families": [self.family] if self.family else None,
                "parameter_size": parameter_size(self.parameter_count), "quantization_level": self.quantization}

    def card(self) -> dict[str, Any]:
        """An entry of OpenAI's ``GET /v1/models``."""
        out: dict[str, Any] = {"id": self.name, "object": "model", "created": int(self.modified.timestamp()),
                               "owned_by": "codette"}
        if self.context_length is not None:
            out["context_length"] = self.context_length
        return out

    def tag(self) -> dict[str, Any]:
        """An entry of Ollama's ``GET /api/tags``."""
        return {"name": tagged(self.name), "model": tagged(self.name), "modified_at": rfc3339(self.modified),
                "size": self.size, "digest": self.digest, "details": self.details()}

    def running(self) -> dict[str, Any]:
        """An entry of Ollama's ``GET /api/ps``: loaded for as long as the server runs."""
        return {**self.tag(), "expires_at": "0001-01-01T00:00:00Z", "size_vram": 0,
                "context_length": self.context_length}

    def show(self) -> dict[str, Any]:
        """Ollama's ``POST /api/show``. ``template`` is the model's own chat template (Jinja, as stored in the
        checkpoint's tokenizer or the GGUF), not a Go template: the server renders it, clients need not."""
        info: dict[str, Any] = {"general.architecture": self.family or None,
                                "general.parameter_count": self.parameter_count,
                                "general.file_type": self.quantization or None}
        if self.family and self.context_length is not None:
            info[f"{self.family}.context_length"] = self.context_length
        parameters = f"num_ctx {self.context_length}" if self.context_length is not None else ""
        return {"modelfile": f"# served by codette serve\nFROM {self.name}\n"
                             + (f"PARAMETER {parameters}\n" if parameters else ""),
                "parameters": parameters, "template": self.template, "details": self.details(),
                "model_info": {k: v for k, v in info.items() if v is not None},
                "capabilities": ["completion", "tools"], "modified_at": rfc3339(self.modified)}
