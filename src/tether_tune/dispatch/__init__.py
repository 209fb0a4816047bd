"""Dispatch: carry our calls out on a real CodeTether server (MCP JSON-RPC over HTTP).

| module | what |
|---|---|
| ``client`` | :class:`CodeTetherClient`: JSON-RPC over ``httpx``, both result shapes, errors that say what to do |
| ``mapping`` | our 8 tools onto the server's (:data:`ROUTES`), the drift check, ``playback_session`` on the client |
| ``execute`` | :func:`carry_out` one call, :func:`dispatch_calls` several, :func:`dry_run_requests` |
| ``show`` | results as a person reads them |
| ``command`` | ``tether-tune run "REQUEST" --server URL [--execute] [--yes] [--json]`` |

From Python::

    from tether_tune.dispatch import CodeTetherClient, dispatch_calls
    from tether_tune.format import Call

    with CodeTetherClient("http://127.0.0.1:9000") as client:
        drift = client.connect()  # tools/list, checked against our tools
        results = dispatch_calls([Call("create_task", {"title": "fix the login bug"})], client)

The user documentation is ``docs/dispatch.md``.
"""

from .client import DEFAULT_SERVER, RPC_PATH, CodeTetherClient, rpc_url, unwrap_result
from .command import RunConfig, read_calls, run_request
from .execute import CallResult, carry_out, dispatch_calls, dry_run_requests
from .mapping import ROUTES, Drift, DriftProblem, Route, ServerCall, check_drift, summarize, to_server

__all__ = [
    "DEFAULT_SERVER", "RPC_PATH", "CodeTetherClient", "rpc_url", "unwrap_result", "RunConfig", "read_calls",
    "run_request", "CallResult", "carry_out", "dispatch_calls", "dry_run_requests", "ROUTES", "Drift",
    "DriftProblem", "Route", "ServerCall", "check_drift", "summarize", "to_server",
]
