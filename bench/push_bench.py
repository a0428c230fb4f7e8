"""Push sends per second end to end from the ledger: audience, plan (ledger rows written),
then delivery (claim, send over HTTP, settle) to the local fake FCM and, when push/apns.py
and push/fake_apns.py exist, the local fake APNs.

    .venv/bin/python bench/push_bench.py                      # 20,000 people per service, 3 runs
    .venv/bin/python bench/push_bench.py --people 5000 --runs 1

Each run plans a new campaign run for `--people` people whose only token is on that service
and times `run_campaign` from the start (audience query) to the last settle; FCM and APNs runs
alternate, so both see the same machine load. The fake servers run in their own processes
(they would otherwise share this process's CPU with the sender). Prints every run and
`RESULT fcm_per_s=<median> apns_per_s=<median or n/a>`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crm.db.embedded import EmbeddedPostgres  # noqa: E402
from crm.db.migrate import migrate  # noqa: E402
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


def _apns() -> tuple | None:
    """(start_server, make_sender) from the APNs helpers, or None if they are not there."""
    try:
        from push import apns, fake_apns  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return None
    return None  # wired once push/apns.py and push/fake_apns.py land


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crm-push-bench-"))
    pg = EmbeddedPostgres(work / "pgdata")
    url = pg.start()
    migrate(url)
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
    apns = _apns()
    rates: dict[str, list[float]] = {"fcm": [], "apns": []}
    now = datetime.now(UTC)
    try:
        for run in range(args.runs):
            for service in ("fcm", "apns"):
                if service == "apns" and apns is None:
                    continue
                sender = FcmSender(creds, base, concurrency=args.concurrency)
                before = httpx.get(f"{base}/_count").json()["received"]
                started = time.perf_counter()
                summary = run_campaign(url, _campaign(service), now=now,
                                       senders={service: sender}, run_id=f"run{run}")
                elapsed = time.perf_counter() - started
                received = httpx.get(f"{base}/_count").json()["received"] - before
                rate = summary.sent / elapsed
                rates[service].append(rate)
                print(f"run {run + 1} {service}: planned {summary.planned_new}, sent "
                      f"{summary.sent}, failed {summary.failed}, received {received} at the "
                      f"fake, {elapsed:.2f} s end to end: {rate:,.0f}/s", flush=True)
                assert summary.sent == received == args.people, json.dumps(summary.__dict__)
    finally:
        server.terminate()
        server.join(5)
        pg.stop(mode="immediate")
    fcm = f"{statistics.median(rates['fcm']):.0f}"
    apns_rate = f"{statistics.median(rates['apns']):.0f}" if rates["apns"] else "n/a"
    worst = f"{min(rates['fcm']):.0f}"
    print(f"fcm runs/s: {', '.join(f'{r:.0f}' for r in rates['fcm'])} (worst {worst})")
    print(f"RESULT fcm_per_s={fcm} apns_per_s={apns_rate}")


if __name__ == "__main__":
    main()
