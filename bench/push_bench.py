"""Push sends per second end to end from the ledger: audience, plan (ledger rows written),
then delivery (claim, send over HTTP, settle) to the local fake FCM (HTTP/1.1) and the local
fake APNs (HTTP/2 over TLS).

    .venv/bin/python bench/push_bench.py                      # 20,000 people per service, 3 runs
    .venv/bin/python bench/push_bench.py --people 5000 --runs 1

Each run plans a new campaign run for `--people` people whose only token is on that service
and times `run_campaign` from the start (audience query) to the last settle; FCM and APNs runs
alternate, so both see the same machine load. The fake servers run in their own processes
(they would otherwise share this process's CPU with the sender). Prints every run and
`RESULT fcm_per_s=<median> apns_per_s=<median>`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from push.apns import ApnsSender, load_key  # noqa: E402
from push.campaign import Campaign  # noqa: E402
from push.fake_servers import service_account  # noqa: E402
from push.fcm import FcmSender  # noqa: E402
from push.run import run_campaign  # noqa: E402
from tests.push_shop import TABLES  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_fcm(port: int) -> None:
    """The fake FCM plus GET /_count (messages received), for the bench only."""
    import uvicorn
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from push.fake_fcm import FakeFcmState, create_app

    state = FakeFcmState()
    app = create_app(state)

    async def count(_request) -> JSONResponse:
        return JSONResponse({"received": len(state.received)})

    app.router.routes.append(Route("/_count", count))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop",
                http="httptools", access_log=False)


def _fill(url: str, people: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLES)
        # user_features.orders tells the two groups apart, so each campaign's audience is
        # exactly the people whose token is on its service
        for orders, (service, device) in enumerate((("fcm", "android"), ("apns", "ios")), 1):
            conn.execute(
                """INSERT INTO crm.users SELECT md5(%(s)s || i)::uuid, 'UTC'
                   FROM generate_series(1, %(n)s) AS i""", {"s": service, "n": people})
            token = ("'tok-' || i" if service == "fcm"
                     else "lpad(to_hex(i), 64, '0')")  # an APNs token is 64 hex digits
            conn.execute(
                f"""INSERT INTO crm.push_tokens SELECT md5(%(s)s || i)::uuid, {token},
                        %(d)s, now(), true FROM generate_series(1, %(n)s) AS i""",
                {"s": service, "d": device, "n": people})
            conn.execute(
                """INSERT INTO crm.user_features (user_id, orders, monetary)
                   SELECT md5(%(s)s || i)::uuid, %(o)s, 0 FROM generate_series(1, %(n)s) AS i""",
                {"s": service, "o": orders, "n": people})


def _campaign(service: str) -> Campaign:
    orders = 1 if service == "fcm" else 2
    return Campaign.model_validate({
        "name": f"bench_{service}", "channel": service,
        "audience": {"features": {"orders": {"min": orders, "max": orders}}},
        "message": {"title": "Bench", "body": "A push from the bench"},
        "send_time": "now",
        # every run is a new run id at the same clock: no caps, no quiet hours in the way
        "guardrails": {"per_day": 1000, "per_week": 1000, "quiet_start": 0, "quiet_end": 0},
    })


class _Counted(list):
    """The fake's list of accepted messages, also counted where the bench process sees it."""

    def __init__(self, counter) -> None:
        super().__init__()
        self.counter = counter

    def append(self, item) -> None:
        super().append(item)
        self.counter.value += 1


def _serve_apns(folder: Path, ready, counter) -> None:
    """The fake APNs (h2 over TLS) in its own process; `counter` counts accepted messages."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from push.fake_apns import FakeApns, FakeApnsState
    from push.fake_servers import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC

    key = load_pem_private_key((folder / "AuthKey.p8").read_bytes(), None)
    state = FakeApnsState(key.public_key(), APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC)
    state.received = _Counted(counter)
    server = FakeApns(state, folder / "ca.pem", folder / "tls.key")
    ready.put(server.start())
    while True:
        time.sleep(3600)


def _start_apns(work: Path) -> tuple[multiprocessing.Process, object, Callable[[], ApnsSender]]:
    from push.fake_apns import write_self_signed, write_test_key
    from push.fake_servers import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC

    write_test_key(work / "AuthKey.p8")
    write_self_signed(work / "ca.pem", work / "tls.key")
    ready: multiprocessing.Queue = multiprocessing.Queue()
    counter = multiprocessing.Value("q", 0, lock=False)  # one writer, read between runs
    proc = multiprocessing.Process(target=_serve_apns, args=(work, ready, counter), daemon=True)
    proc.start()
    url = ready.get(timeout=30)
    key = load_key(work / "AuthKey.p8")

    def sender() -> ApnsSender:
        return ApnsSender(key, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, url, str(work / "ca.pem"))

    return proc, counter, sender


def _measure(url: str, work: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Sends per second for each service, one figure per run."""
    _fill(url, args.people)
    port = _free_port()
    server = multiprocessing.Process(target=_serve_fcm, args=(port,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{base}/_count", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    creds = service_account(f"{base}/token", "bench-shop")
    apns_proc, apns_count, apns_sender = _start_apns(work)
    rates: dict[str, list[float]] = {"fcm": [], "apns": []}
    now = datetime.now(UTC)
    try:
        for run in range(args.runs):
            for service in ("fcm", "apns"):
                def received(service: str = service) -> int:
                    if service == "fcm":
                        return httpx.get(f"{base}/_count").json()["received"]
                    return apns_count.value  # type: ignore[attr-defined]

                sender = (FcmSender(creds, base, concurrency=args.concurrency)
                          if service == "fcm" else apns_sender())
                before = received()
                started = time.perf_counter()
                summary = run_campaign(url, _campaign(service), now=now,
                                       senders={service: sender}, run_id=f"run{run}")
                elapsed = time.perf_counter() - started
                got = received() - before
                rate = summary.sent / elapsed
                rates[service].append(rate)
                print(f"run {run + 1} {service}: planned {summary.planned_new}, sent "
                      f"{summary.sent}, failed {summary.failed}, received {got} at the "
                      f"fake, {elapsed:.2f} s end to end: {rate:,.0f}/s", flush=True)
                assert summary.sent == got == args.people, json.dumps(summary.__dict__)
    finally:
        for proc in (server, apns_proc):
            proc.terminate()
            proc.join(5)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database-url", default=None,
                        help="a scratch database without crm and ml schemas (the benchmark makes "
                             "its own); default an embedded server")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crm-push-bench-") as tmp, \
            scratch_database(Path(tmp), args.database_url) as url:
        rates = _measure(url, Path(tmp), args)
    fcm = f"{statistics.median(rates['fcm']):.0f}"
    apns_rate = f"{statistics.median(rates['apns']):.0f}"
    for service, runs in rates.items():
        print(f"{service} runs/s: {', '.join(f'{r:.0f}' for r in runs)} "
              f"(worst {min(runs):.0f})")
    print(f"RESULT fcm_per_s={fcm} apns_per_s={apns_rate}")


if __name__ == "__main__":
    main()
