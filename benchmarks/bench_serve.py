"""Serving throughput: the real server, 8 concurrent OpenAI clients, batched vs one request at a time, in one run.

Starts ``tether-tune serve`` twice on loopback ports (``--max_batch_size 8``, then ``--max_batch_size 1``), each
time sends the same requests from ``--clients`` threads with the ``openai`` client (every client its own
connection), and prints requests/s and p50/p95 seconds per request for both, and their ratio.

    python benchmarks/bench_serve.py --model_path runs/main/model          # a trained run (the README's table)
    python benchmarks/bench_serve.py --model_path /tmp/tiny --rounds 1     # smoke run on a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_latency import test_requests  # noqa: E402  (the latency benchmark's requests: the held-out split)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_path: str, flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "tether_tune.cli", "serve", "--model_path", model_path, "--port", str(port),
           "--served_model_name", "bench", "--log_level", "warning", *flags]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not come up:\n{log.read_text()}")


def drive(url: str, requests: list[str], clients: int) -> tuple[float, list[float], int]:
    """Send ``requests`` from ``clients`` threads; (wall seconds, per-request seconds, errors)."""
    import openai

    def one(text: str) -> tuple[float, bool]:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        t0 = time.perf_counter()
        try:
            client.chat.completions.create(model="bench", messages=[{"role": "user", "content": text}],
                                           max_tokens=128)
            return time.perf_counter() - t0, True
        except openai.OpenAIError:
            return time.perf_counter() - t0, False

    # One warm-up request builds the prefix cache and the grammars.
    one(requests[0])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, requests))
    return time.perf_counter() - t0, [s for s, _ in results], sum(not ok for _, ok in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_path", default="runs/main/model", help="a run directory or model to serve")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--n", type=int, default=12, help="how many requests of the run's held-out split (the first n)")
    ap.add_argument("--test_file", default=None, help="JSONL with an \"input\" per line (default: the run's held-out split)")
    ap.add_argument("--rounds", type=int, default=2, help="how many times the n requests are sent")
    ap.add_argument("--log_dir", default="/tmp", help="where the servers' logs go")
    args = ap.parse_args()

    requests = test_requests(args.model_path, args.test_file, args.n) * args.rounds
    rows = []
    modes = [("batched (8)", ["--max_batch_size", "8"]),
             ("batched (8), no drafts", ["--max_batch_size", "8", "--speculate", "0"]),
             ("one at a time", ["--max_batch_size", "1"])]
    for k, (label, flags) in enumerate(modes):
        proc, url = start(args.model_path, flags, Path(args.log_dir) / f"bench_serve_{k}.log")
        try:
            wall, seconds, errors = drive(url, requests, args.clients)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        q = statistics.quantiles(seconds, n=20)
        rows.append({"mode": label, "requests": len(requests), "errors": errors, "wall_s": round(wall, 2),
                     "requests_per_s": round(len(requests) / wall, 3), "p50_s": round(statistics.median(seconds), 3),
                     "p95_s": round(q[18], 3)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| mode | requests/s | p50 s | p95 s | errors |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['errors']} |")
    for r in rows[:-1]:
        print(f"throughput ratio {r['mode']} / one at a time: {r['requests_per_s'] / rows[-1]['requests_per_s']:.2f}x")
    print(f"({args.clients} clients, {len(requests)} requests, {args.model_path})")


if __name__ == "__main__":
    main()
