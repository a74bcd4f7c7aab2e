"""Run the server: resolve the model, build the app, hand it to uvicorn."""

from __future__ import annotations

import logging
from typing import Any

from codette.errors import CodetteError
from codette.serve.app import ServeConfig, create_app

log = logging.getLogger(__name__)


def serve(model: str, port: int = 8080, config: ServeConfig | None = None, device: str = "cpu",
          log_level: str = "info") -> None:
    """Serve ``model`` until interrupted (Ctrl-C)."""
    import uvicorn

    from codette.agent.resolve import resolve_backend

    cfg = config or ServeConfig()
    if not 0 < port < 65536:
        raise CodetteError(f"--port must be 1 to 65535, got {port}")
    backend: Any = resolve_backend(model, device=device)
    cfg.model_name = cfg.model_name if cfg.model_name != "codette" else _model_id(model)
    app = create_app(backend, cfg)
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"Codette: serving {model} ({backend.name} backend) on http://{shown}:{port}/ "
          f"(OpenAI API at /v1, chat page at /)", flush=True)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this address can use the model "
                    "and its tools", cfg.host)
    try:
        uvicorn.run(app, host=cfg.host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


def _model_id(model: str) -> str:
    """The id clients see in /v1/models: the model argument's last path part (``codette_model``)."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name or "codette"
