"""Run the server: resolve the model, build the app, hand it to uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Any

from codette.errors import CodetteError
from codette.serve.app import ServeConfig, create_app

log = logging.getLogger(__name__)


def serve(model: str, port: int = 8080, config: ServeConfig | None = None, device: str = "cpu",
          log_level: str = "info") -> None:
    """Serve ``model`` until interrupted (Ctrl-C).

    The flags are checked and the port is bound before the model loads, so a mistake or a port in use
    is one line at once, not a wait for the model and then uvicorn's log; uvicorn serves that socket.
    """
    import uvicorn

    from codette.agent.core import check_tools

    cfg = config or ServeConfig()
    if not 0 < port < 65536:
        raise CodetteError(f"--port must be 1 to 65535, got {port}")
    check_tools(cfg.agent_tools, cfg.enable_python)
    check_options(cfg)
    sock = listen_socket(cfg.host, port)
    backend: Any = None
    try:
        backend = load_backend(model, device, cfg.ctx_size, cfg.threads)
        cfg.model_name = cfg.model_name if cfg.model_name != "codette" else _model_id(model)
        app = create_app(backend, cfg)
        shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        alias = f" as {cfg.model_alias!r}" if cfg.model_alias else ""
        print(f"Codette: serving {model}{alias} ({backend.name} backend) on http://{shown}:{port}/ "
              f"(OpenAI API at /v1, Ollama API at /api, chat page at /"
              f"{', metrics at /metrics' if cfg.metrics else ''})", flush=True)
        if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
            log.warning("listening on %s without --api-key: anyone who can reach this address can use the model "
                        "and its tools", cfg.host)
        server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=port, log_level=log_level,
                                               timeout_graceful_shutdown=5))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # Ctrl-C is how a server ends (as uvicorn.run treats it)
            return
        if not server.started:  # uvicorn has logged why; exit nonzero, as uvicorn.run does
            raise CodetteError(f"the server on port {port} did not start (see the log above)")
    finally:
        sock.close()
        close = getattr(backend, "close", None)
        if callable(close):
            close()


def check_options(cfg: ServeConfig) -> None:
    """The numeric flags, checked before anything loads."""
    if cfg.ctx_size is not None and cfg.ctx_size < 2:
        raise CodetteError(f"--ctx-size must be 2 tokens or more, got {cfg.ctx_size}")
    if cfg.threads is not None and cfg.threads < 1:
        raise CodetteError(f"--threads must be 1 or more, got {cfg.threads}")
    if cfg.model_alias is not None and not cfg.model_alias.strip():
        raise CodetteError("--model-alias must not be empty")


def load_backend(model: str, device: str, ctx_size: int | None = None, threads: int | None = None) -> Any:
    """The backend for ``model`` (as the agent resolves it), with the server's context and thread count.

    A GGUF is loaded with them (llama.cpp sizes its KV cache to ``ctx_size`` and runs ``threads``
    threads); a checkpoint runs torch with ``threads`` threads, its context cut by the app to ``ctx_size``.
    An HTTP backend's generation is the upstream server's: only the context cut applies.
    """
    from codette.agent.resolve import resolve_backend
    from codette.backends.gguf import GGUFBackend

    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":  # load once, with the options
        return GGUFBackend(path, n_threads=threads, n_ctx=ctx_size or 0)
    backend = resolve_backend(model, device=device)
    if isinstance(backend, GGUFBackend) and (threads or ctx_size):  # a run folder holding only a GGUF
        where = backend.path
        backend.close()
        backend = GGUFBackend(where, n_threads=threads, n_ctx=ctx_size or 0)
    elif threads and getattr(backend, "name", "") == "local":
        import torch

        torch.set_num_threads(threads)
    elif threads:
        log.warning("--threads %d: the %s backend generates on another server; ignored", threads, backend.name)
    return backend


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (uvicorn listens on it), or the user's one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse the port
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CodetteError(f"--port {port}: the port is already in use on {host} (another server is "
                               f"listening there); stop it or choose another --port") from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise CodetteError(f"--host {host}: not an address of this machine ({exc.strerror or exc})") from None
        raise CodetteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _model_id(model: str) -> str:
    """The id clients see in /v1/models: the model argument's last path part (``codette_model``)."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name or "codette"
