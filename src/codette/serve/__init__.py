"""`codette serve`: an OpenAI- and Ollama-compatible HTTP server, Codette's agent over HTTP, and a web
chat page (docs/SERVING.md lists the routes and options).

::

    codette serve codette_model --port 8080
    # then: the page at http://127.0.0.1:8080/, or any OpenAI client:
    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")
    client.chat.completions.create(model="codette", messages=[{"role": "user", "content": "Hi"}])
    # or Ollama's client:
    import ollama
    ollama.Client(host="http://127.0.0.1:8080").chat(model="codette", messages=[{"role": "user", "content": "Hi"}])

:func:`create_app` builds the ASGI application around any backend; :func:`serve` resolves a model
(a run folder, checkpoint or GGUF, as the agent does) and runs it with uvicorn.
"""

from __future__ import annotations

from codette.serve.app import ServeConfig, create_app
from codette.serve.run import serve

__all__ = ["ServeConfig", "create_app", "serve"]
