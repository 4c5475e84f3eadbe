"""The local API under load: closed-loop clients over real HTTP against the
API of a running `make run` stack (started here on the benchmark's database
and broker), creating and reading customers (one creation to three reads),
at 8, 32 and 128 clients, each with a new connection per request and with
keep-alive. Each client sends its next request when the last is answered.

Against `chalice local` as it ships (backlog 5, Nagle on), serving the same
app in the same stack with the same load: what our launcher changes.

    python -m bench.http_load            (part of `make bench`)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devstack.postgres import free_port, wait_until_listening

PROJECT = Path(__file__).resolve().parent.parent
CLIENTS = (8, 32, 128)
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "4"))
_CONNECTION_FAILURES = (ConnectionError, asyncio.IncompleteReadError, OSError)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    resets: int = 0  # connections refused, reset or cut before an answer
    server_errors: int = 0  # 5xx
    unexpected: int = 0  # any other answer than the one a request alone gets

    def figures(self, seconds: float) -> dict:
        ordered = sorted(self.latencies)
        return {"requests_per_second": len(ordered) / seconds,
                "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
                "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000 if ordered else None,
                "resets": self.resets, "server_errors": self.server_errors, "unexpected": self.unexpected}


async def _exchange(reader, writer, method: str, path: str, token: str, body: bytes, keep_alive: bool) -> int:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n")
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _client(port: int, token: str, ids: list[str], keep_alive: bool, deadline: float, tally: Tally) -> None:
    rng = random.Random()
    connection = None
    while time.monotonic() < deadline:
        if rng.random() < 0.25:
            email = f"load-{uuid.uuid4().hex}@example.com"
            method, path, body, expected = "POST", "/customer", json.dumps({"name": "Load", "email": email}), 201
        else:
            method, path, body, expected = "GET", f"/customer/{rng.choice(ids)}", "", 200
        began = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            status = await asyncio.wait_for(
                _exchange(*connection, method, path, token, body.encode(), keep_alive), timeout=30)
        except (TimeoutError, *_CONNECTION_FAILURES):
            tally.resets += 1
            if connection is not None:
                connection[1].close()
            connection = None
            continue
        tally.latencies.append(time.perf_counter() - began)
        if status >= 500:
            tally.server_errors += 1
        elif status != expected:
            tally.unexpected += 1
        if not keep_alive:
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def load(port: int, token: str, ids: list[str], clients: int, keep_alive: bool, seconds: float = SECONDS) -> dict:
    tally = Tally()

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, token, ids, keep_alive, deadline, tally) for _ in range(clients)))

    began = time.monotonic()
    asyncio.run(run())
    return tally.figures(time.monotonic() - began)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def run(database_url: str, bootstrap: str, seconds: float = SECONDS, clients: tuple[int, ...] = CLIENTS) -> dict:
    """The stack on the benchmark's database and broker; the load against
    its API, then against chalice local as shipped, serving the same app."""
    state = Path(tempfile.mkdtemp(prefix="bench-http-load-"))
    api_port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AUTH_"))},
           "DEVSTACK_DIR": str(state), "PORT": str(api_port), "AUTH_ISSUER_PORT": str(free_port()),
           "AWS_PORT": str(free_port()), "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "KAFKA_TOPIC": f"bench-http-load-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "warning",
           "POWERTOOLS_METRICS_DISABLED": "true"}
    stack = subprocess.Popen([sys.executable, "-m", "devstack"], cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    stock = None
    try:
        deadline = time.monotonic() + 90
        while not (state / "stack.env").exists():
            if stack.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local stack did not start")
            time.sleep(0.2)
        wait_until_listening(api_port, stack)
        token = subprocess.run([sys.executable, "-m", "devstack.issuer", "token"], cwd=PROJECT, env=env,
                               check=True, capture_output=True, text=True).stdout.strip()
        ids = asyncio.run(_create(api_port, token, 64))
        # The same app, the same stack, served by `chalice local` itself.
        settings = dict(line.split("=", 1) for line in (state / "stack.env").read_text().splitlines())
        stock_port = free_port()
        stock = subprocess.Popen([str(Path(sys.executable).parent / "chalice"), "local", "--no-autoreload",
                                  "--port", str(stock_port), "--stage", "dev"], cwd=PROJECT,
                                 env={**env, **settings}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_listening(stock_port, stock)
        results: dict = {"seconds_per_case": seconds, "clients": list(clients), "ours": {}, "chalice_local": {}}
        for keep_alive in (False, True):
            mode = "keep_alive" if keep_alive else "new_connection"
            for count in clients:
                for name, port in (("ours", api_port), ("chalice_local", stock_port)):
                    results[name].setdefault(mode, {})[str(count)] = load(port, token, ids, count, keep_alive,
                                                                          seconds)
        return results
    finally:
        if stock is not None:
            stock.terminate()
            stock.wait(timeout=30)
        _stop(stack)


async def _create(port: int, token: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"name": "Load", "email": f"load-seed-{n}-{uuid.uuid4().hex[:6]}@example.com"}).encode()
        head = (f"POST /customer HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        writer.write(head.encode() + body)
        answer = await reader.read()
        writer.close()
        ids.append(json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"])
    return ids


def report(results: dict) -> bool:
    """Prints the table; True when 128 clients saw no reset and no 5xx."""
    print(f"\nHTTP load on the local API (make run), closed-loop clients, one creation to three reads,"
          f" {results['seconds_per_case']:.1f} s each; against chalice local as shipped, same stack")
    print(f"{'connections':>15} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'resets':>7} {'5xx':>5}"
          f"   | chalice local: {'req/s':>7} {'p99 ms':>8} {'resets':>7} {'5xx':>5}   ours/it")
    ok = True
    most = str(max(results["clients"]))
    for mode in ("new_connection", "keep_alive"):
        for clients in map(str, results["clients"]):
            f, s = results["ours"][mode][clients], results["chalice_local"][mode][clients]
            print(f"{mode.replace('_', ' '):>15} {clients:>7} {f['requests_per_second']:>8.0f} {f['p50_ms']:>8.1f}"
                  f" {f['p99_ms']:>8.1f} {f['resets']:>7} {f['server_errors']:>5}   |"
                  f" {s['requests_per_second']:>22.0f} {s['p99_ms'] or 0:>8.1f} {s['resets']:>7}"
                  f" {s['server_errors']:>5}   {f['requests_per_second'] / max(s['requests_per_second'], 1):>6.2f}")
            if clients == most:
                ok &= f["resets"] == 0 and f["server_errors"] == 0 and f["unexpected"] == 0
    print(f"  (target at {most} clients: 0 resets and 0 5xx: {'met' if ok else 'NOT met'})")
    return ok


def main() -> int:
    from devstack.kafka import broker_for_run
    from devstack.postgres import database_for_run

    with database_for_run("customer_http_load", durable=True) as url, broker_for_run() as bootstrap:
        report(run(url, bootstrap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
