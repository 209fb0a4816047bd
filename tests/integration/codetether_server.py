"""A throwaway CodeTether server for the integration tests: a PostgreSQL cluster in a temporary directory and
``codetether run``, both on free loopback ports, every outside service pointed at an unreachable loopback port,
stopped by process id. Nothing is installed here: ``pip install -e '.[integration]' -c constraints/codetether.txt``
(``make test-integration``) installs the server.

Run alone (``python tests/integration/codetether_server.py``) it starts both, prints the addresses and the start
times, and waits for Ctrl-C.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tether_tune.dispatch import RPC_PATH

DB_NAME = "codetether"
#: Nothing listens on the discard port: every outside service the server knows is pointed here.
DEAD = "127.0.0.1:9"
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin() -> Path | None:
    """The PostgreSQL binaries: ``$PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    found = shutil.which("initdb")
    candidates += [str(Path(found).parent)] if found else []
    return next((Path(c) for c in candidates if c and (Path(c) / "initdb").is_file()), None)


def find_codetether() -> Path | None:
    """``codetether`` beside this Python (the venv's), else on ``PATH``."""
    beside = Path(sys.executable).parent / "codetether"
    return beside if beside.is_file() else (Path(p) if (p := shutil.which("codetether")) else None)


def _as_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    return {"user": "postgres"} if os.geteuid() == 0 else {}


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait_s: float = 10.0) -> None:
    """Stop one process we started, by its id: ``sig``, then SIGKILL if it has not exited in ``wait_s``."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Postgres:
    bin: Path
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB_NAME}"

    def start(self) -> None:
        data, log = self.root / "pgdata", self.root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
             "-k", str(self.root), "-c", "fsync=off", "-c", "full_page_writes=off"],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, **_as_user())
        deadline = time.monotonic() + 30
        while self._run("pg_isready", *self._where(), check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        self._run("createdb", *self._where(), DB_NAME)

    def psql(self, sql: str) -> str:
        return self._run("psql", *self._where(), "-d", DB_NAME, "-v", "ON_ERROR_STOP=1", "-qAtc", sql).stdout

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown

    def _where(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, **_as_user())
        if check and r.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r


def server_env(root: Path, main_port: int, mcp_port: int, database_url: str) -> dict[str, str]:
    """Loopback only: the server's ports, its database, and every outside service at :data:`DEAD`."""
    dead_url = f"http://{DEAD}"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "LIVEKIT_API_KEY")}
    env.update(
        MCP_HTTP_HOST="127.0.0.1", MCP_HTTP_PORT=str(mcp_port), A2A_HOST="127.0.0.1",
        A2A_BASE_URL=f"http://127.0.0.1:{main_port}",
        DATABASE_URL=database_url, A2A_DATABASE_URL=database_url,
        REDIS_URL=f"redis://{DEAD}", A2A_REDIS_URL=f"redis://{DEAD}",
        KEYCLOAK_URL=dead_url, VAULT_ADDR=dead_url, MINIO_ENDPOINT=DEAD, LIVEKIT_URL=dead_url,
        API_BASE_URL=dead_url, SPOTLESSBINCO_API_URL=dead_url, SPOTLESSBINCO_RUST_URL=dead_url,
        OPENCODE_HOST="127.0.0.1", OPENCODE_PORT="9",
        # Files the server writes: all inside the temporary directory (its default is inside site-packages).
        HOME=str(root / "home"), MONITOR_DB_PATH=str(root / "monitor.db"),
        OPENCODE_DATA_DIR=str(root / "opencode"), SESSIONS_DB_PATH=str(root / "sessions.db"),
    )
    return env


@dataclass
class CodeTetherServer:
    """A running server: ``url`` is its MCP JSON-RPC endpoint; ``log`` its output; the start times in seconds."""

    url: str
    log: Path
    proc: subprocess.Popen
    postgres: Postgres
    start_s: dict[str, float]

    def rpc_posts(self) -> int:
        """How many JSON-RPC requests the server has logged (the dry-run test checks that none came)."""
        return self.log.read_text(errors="replace").count(f"POST {RPC_PATH} ")

    def stop(self) -> None:
        _stop(self.proc)
        self.postgres.stop()


def _wait_for_tools(url: str, proc: subprocess.Popen, log: Path) -> None:
    body = {"jsonrpc": "2.0", "id": 0, "method": "tools/list"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.post(url, json=body, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the CodeTether server did not answer tools/list at {url}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def _ensure_global_codebase(server_url: str, pg: Postgres) -> None:
    """Tasks persist (and ``list_tasks`` finds them) only once a ``codebases`` row ``global`` exists; the server
    creates its tables on first use, so use the database once (``list_tasks``) and then add the row."""
    body = {"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": {"name": "list_tasks", "arguments": {}}}
    httpx.post(server_url, json=body, timeout=30, trust_env=False).raise_for_status()
    pg.psql("INSERT INTO codebases (id, name, path) VALUES ('global', 'global', '/') ON CONFLICT (id) DO NOTHING")


def start(root: Path, pg_bin: Path, codetether: Path) -> CodeTetherServer:
    """PostgreSQL, then the server; both stopped again if the server does not come up."""
    t0 = time.perf_counter()
    pg = Postgres(pg_bin, root)
    try:
        pg.start()
    except BaseException:
        pg.stop()
        raise
    t1 = time.perf_counter()
    main_port, mcp_port = free_port(), free_port()
    url, log = f"http://127.0.0.1:{mcp_port}{RPC_PATH}", root / "codetether.log"
    proc = subprocess.Popen(
        [str(codetether), "run", "--host", "127.0.0.1", "--port", str(main_port)],
        env=server_env(root, main_port, mcp_port, pg.url), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        cwd=root)
    server = CodeTetherServer(url, log, proc, pg, {})
    try:
        _wait_for_tools(url, proc, log)
        t2 = time.perf_counter()
        _ensure_global_codebase(url, pg)
    except BaseException:
        server.stop()
        raise
    server.start_s = {"postgres": t1 - t0, "codetether": t2 - t1, "total": time.perf_counter() - t0}
    return server


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    pg_bin, codetether = find_pg_bin(), find_codetether()
    if pg_bin is None or codetether is None:
        sys.exit("need PostgreSQL (initdb) and codetether: make setup-integration")
    # Stop both on Ctrl-C or `kill PID` (a shell starts background jobs with SIGINT ignored: SIGTERM still works).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="codetether-") as tmp:
        srv = start(Path(tmp), pg_bin, codetether)
        print(f"MCP JSON-RPC: {srv.url}\nstarted in {srv.start_s}\nlog: {srv.log}\npid {os.getpid()}: "
              "Ctrl-C or kill stops both", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            srv.stop()
