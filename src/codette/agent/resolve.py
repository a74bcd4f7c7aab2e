"""``model_name`` -> a backend, in a fixed order, with an error that lists what was tried.

1. an existing path: a run folder (its ``model_best.pt``, ``model_final.pt`` or newest
   ``model_step_N.pt``; else its one ``.gguf``), a ``.pt`` checkpoint, or a ``.gguf`` file;
2. an ``http(s)://`` URL: an OpenAI-compatible server (``/v1/chat/completions``);
3. the name ``codette``: the quickstart's ``codette_model/`` folder, when it exists;
4. otherwise an Ollama model of that name on ``OLLAMA_HOST``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from codette.errors import CodetteError

log = logging.getLogger(__name__)

QUICKSTART_DIR = Path("codette_model")


def backend_for_path(path: Path, device: str = "cpu") -> Any:
    """A local (``.pt``) or GGUF backend for a file or run folder (:func:`codette.checkpoint.model_file`)."""
    from codette.checkpoint import model_file

    path = model_file(path)
    if path.suffix == ".pt":
        from codette.backends.local import LocalBackend

        log.debug("loading checkpoint %s on %s", path, device)
        return LocalBackend.from_checkpoint(path, device=device)
    if path.suffix == ".gguf":
        from codette.backends.gguf import GGUFBackend

        log.debug("loading GGUF %s", path)
        return GGUFBackend(path)
    raise CodetteError(f"{path} is neither a checkpoint (.pt) nor a GGUF (.gguf) nor a run folder")


def resolve_backend(model_name: str, *, device: str = "cpu", ollama_host: str | None = None,
                    http: dict[str, Any] | None = None) -> Any:
    """The backend ``model_name`` names (see the module docstring for the order)."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise CodetteError("model_name must be a path, an http(s):// URL, 'codette' or an Ollama model name")
    tried: list[str] = []
    path = Path(model_name).expanduser()
    if path.exists():
        return backend_for_path(path, device)
    tried.append(f"no file or folder {str(path)!r}")
    if model_name.startswith(("http://", "https://")):
        from codette.backends.openai import OpenAIBackend

        return OpenAIBackend(model_name, **(http or {}))
    tried.append("not an http(s):// URL")
    if model_name == "codette":
        if QUICKSTART_DIR.is_dir():
            return backend_for_path(QUICKSTART_DIR, device)
        tried.append(f"no quickstart folder {QUICKSTART_DIR}/ in {Path.cwd()} (run `codette quickstart`)")
    from codette.backends.ollama import OllamaBackend

    probe = OllamaBackend(model_name, host=ollama_host, **{**(http or {}), "retries": 0})
    try:
        if probe.has_model():
            return OllamaBackend(model_name, host=ollama_host, **(http or {}))
        tried.append(f"no Ollama model {model_name!r} at {probe.host}")
    except CodetteError as exc:
        tried.append(f"no Ollama server at {probe.host} ({exc})")
    finally:
        probe.close()
    raise CodetteError(f"cannot find model {model_name!r}: " + "; ".join(tried))
