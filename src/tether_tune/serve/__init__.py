"""Serving: OpenAI's chat-completions API over a fine-tuned run (``tether-tune serve``; the ``serve`` extra).

- ``protocol``: the request models, their checks, and the conversion to our renderer's messages;
- ``engine``: the batching decoder (a worker thread, prefix caches and grammars per tool set, streaming deltas);
- ``app``: the FastAPI app, its errors, auth, limits, logs and metrics, and ``run_serve``.
"""

try:
    from .app import ServeConfig, create_app, run_serve
except ImportError as err:  # pragma: no cover - an install problem, said plainly
    raise ImportError(f"serving needs the serve extra: pip install 'tether-tune[serve]' ({err})") from err

__all__ = ["ServeConfig", "create_app", "run_serve"]
