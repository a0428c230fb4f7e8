"""The browser tracker (`collector/static/tracker.js`) in a real headless Chromium.

Pages are served from a second localhost port, so every POST to the collector is cross-origin
and goes through its CORS answer. The assertions are made on `raw.events` in PostgreSQL.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.requirements import optional, require

pytestmark = pytest.mark.browser

TRACKER = Path(__file__).resolve().parents[1] / "collector" / "static" / "tracker.js"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TZ = "Asia/Yekaterinburg"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Path:
    # skips without the browser on a developer's machine; fails under CRM_REQUIRE_ALL (CI)
    require("chromium", CHROMIUM.exists(),
            f"{CHROMIUM} is absent (Debian's `chromium` package: `make browser`)")
    return CHROMIUM

# True once the tracker has run on the page and its queue is empty, i.e. every event it made
# has been answered with a 202 by the collector (which answers only after the commit).
DRAINED = (
    "() => !!(window.crm && window.crm.clientId)"
    " && JSON.parse(localStorage.getItem('_crm_q') || '[]').length === 0"
)
QUEUE_IDS = "() => JSON.parse(localStorage.getItem('_crm_q') || '[]').map(e => e.event_id)"


def test_tracker_minified_size() -> None:
    source = TRACKER.read_text(encoding="utf-8")
    try:
        import rjsmin
    except ImportError:
        rjsmin = None
    if optional("rjsmin", rjsmin is not None,
                "tracker.js size checked unminified, which is stricter"):
        size = len(rjsmin.jsmin(source).encode())
    else:
        size = len(source.encode())
    assert size < 5 * 1024, f"tracker.js is {size} bytes minified, the budget is 5 KB"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static 'shop' on its own port: (origin, folder its pages are written to)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def _write_pages(folder: Path, collector_url: str, write_key: str) -> None:
    tag = (
        f'<script async src="{collector_url}/v1/tracker.js" data-write-key="{write_key}"></script>'
    )
    # page2 also queues a call through the stub before the tracker has loaded.
    stub = (
        "<script>window.crm = window.crm || [];"
        " crm.push(['track', 'click', {page_url: location.href, clicked_element: 'stub'}]);"
        "</script>"
    )
    for n in (1, 2, 3):
        (folder / f"page{n}.html").write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>Page {n}</title>"
            f"{stub if n == 2 else ''}{tag}</head><body><h1>Page {n}</h1>"
            f"<a id='next' href='/page{n % 3 + 1}.html'>next</a></body></html>",
            encoding="utf-8",
        )


def _rows(database_url: str, client_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT event_id::text, event_type, client_id, user_id, device_type, email, payload"
            " FROM raw.events WHERE client_id = %s ORDER BY event_ts, received_at",
            (client_id,),
        )
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_tracker_in_chromium(
    database_url: str, collector_factory: Callable[..., Any], shop_site: tuple[str, Path],
    chromium: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    site, folder = shop_site
    collector = collector_factory(allowed_origins=[site])
    _write_pages(folder, collector.url, collector.write_key)
    failed_posts: list[str] = []

    with sync_playwright() as pw:
        # A zone that is neither UTC nor the machine's, so the stored one can only be the browser's.
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                     env={**os.environ, "TZ": BROWSER_TZ})
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(30_000)
            page.on(
                "requestfailed",
                lambda r: failed_posts.append(r.url) if "/v1/events" in r.url else None,
            )

            def drained() -> None:
                page.wait_for_function(DRAINED, polling=100)

            def storage() -> dict[str, Any]:
                cookies = {c["name"]: c["value"] for c in page.context.cookies()}
                return {
                    "cookie": cookies.get("_crm_cid"),
                    "local": page.evaluate("localStorage.getItem('_crm_cid')"),
                    "tracker": page.evaluate("crm.clientId()"),
                }

            # 1-2. Two anonymous page views, the second reached by a link (referrer).
            page.goto(f"{site}/page1.html")
            drained()
            client_id = page.evaluate("crm.clientId()")
            assert storage() == {"cookie": client_id, "local": client_id, "tracker": client_id}
            page.click("#next")
            page.wait_for_url("**/page2.html")
            drained()

            # 3. Login and a product view on page 2.
            page.evaluate("crm.identify('acct-42', {email: 'A@Example.com'})")
            product_view_id = page.evaluate(
                "crm.track('product_view', {product_id: 'sku-1', product_name: 'Mug',"
                " category: 'kitchen', price: 9.5})"
            )
            drained()

            # 4. A third page, now as the logged-in user.
            page.click("#next")
            page.wait_for_url("**/page3.html")
            drained()

            # 5. The ClientID survives losing either of its two copies.
            page.context.clear_cookies()
            page.reload()
            drained()
            assert storage() == {"cookie": client_id, "local": client_id, "tracker": client_id}
            page.evaluate("localStorage.removeItem('_crm_cid')")
            page.reload()
            drained()
            assert storage() == {"cookie": client_id, "local": client_id, "tracker": client_id}

            rows = _rows(database_url, client_id)
            by_type: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_type.setdefault(row["event_type"], []).append(row)
            assert sorted(by_type) == ["click", "page_view", "product_view", "user_login"]
            views = by_type["page_view"]
            assert [v["payload"]["page_url"] for v in views] == [
                f"{site}/page{n}.html" for n in (1, 2, 3, 3, 3)
            ]
            assert views[1]["payload"]["referrer"] == f"{site}/page1.html"
            assert [v["user_id"] for v in views] == [None, None, "acct-42", "acct-42", "acct-42"]
            (login,) = by_type["user_login"]
            assert login["user_id"] == "acct-42"
            assert login["email"] == "a@example.com"
            assert login["payload"]["auth_status"] == 1
            (product_view,) = by_type["product_view"]
            assert product_view["event_id"] == product_view_id
            assert product_view["user_id"] == "acct-42"
            assert product_view["payload"]["price"] == 9.5
            (click,) = by_type["click"]  # replayed from the stub queue
            assert click["payload"]["clicked_element"] == "stub"
            assert {r["device_type"] for r in rows} == {"web"}
            assert {r["payload"].get("timezone") for r in rows} == {BROWSER_TZ}
            # One browser, one ClientID: nothing from this site was stored under another.
            with psycopg.connect(database_url) as conn:
                (ids,) = conn.execute(
                    "SELECT array_agg(DISTINCT client_id) FROM raw.events"
                    " WHERE payload->>'page_url' LIKE %s",
                    (site + "/%",),
                ).fetchone() or ([],)
            assert ids == [client_id]

            # 6. Collector down: events wait in the localStorage queue.
            collector.stop()
            failed_posts.clear()
            offline_ids: list[str] = [
                page.evaluate(
                    "crm.track('add_to_cart', {product_id: 'sku-1', product_name: 'Mug',"
                    " quantity: 2, price: 9.5})"
                ),
                page.evaluate("crm.track('search', {search_query: 'mugs'})"),
            ]
            for _ in range(60):  # the 1 s batching delay, then a refused connection
                if failed_posts:
                    break
                page.wait_for_timeout(250)  # (lets Playwright deliver the page's events)
            assert failed_posts, "the tracker did not try to send while the collector was down"
            page.wait_for_timeout(500)  # let the tracker handle the failure
            assert set(offline_ids) <= set(page.evaluate(QUEUE_IDS))
            with psycopg.connect(database_url) as conn:
                stored = conn.execute(
                    "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])",
                    (offline_ids,),
                ).fetchone()
            assert stored == (0,)

            # 7. Collector back, next page load: the queue is delivered, each event once.
            collector.start()
            page.click("#next")
            page.wait_for_url("**/page1.html")
            drained()
        finally:
            browser.close()

    rows = _rows(database_url, client_id)
    ids_seen = [r["event_id"] for r in rows]
    for event_id in offline_ids:
        assert ids_seen.count(event_id) == 1, event_id
    assert len(ids_seen) == len(set(ids_seen)) == 6 + 1 + 1 + 1 + 2  # views, login, product, click
    cart = next(r for r in rows if r["event_type"] == "add_to_cart")
    assert (cart["user_id"], cart["payload"]["quantity"]) == ("acct-42", 2)
    assert rows[-1]["event_type"] == "page_view"
    assert rows[-1]["payload"]["page_url"] == f"{site}/page1.html"


RETRY_AFTER = 3  # seconds: longer than the tracker's first backoff (0.5-1.5 s)


class _RefusingFront(http.server.BaseHTTPRequestHandler):
    """The collector's address as the tracker sees it: answers the first POST with 503 and
    Retry-After (and the CORS headers the collector sends, Retry-After exposed), forwards
    every later one to the real collector. Records when each POST came and what it held."""

    collector_url: str
    posts: list[dict[str, Any]]

    def do_POST(self) -> None:
        arrived = time.monotonic()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        origin = self.headers.get("Origin", "")
        post = {"arrived": arrived, "ids": [e["event_id"] for e in orjson.loads(body)]}
        self.posts.append(post)
        if len(self.posts) == 1:
            status, answer = 503, b'{"error":"database unreachable, retry later"}'
            headers = {"Retry-After": str(RETRY_AFTER), "Access-Control-Allow-Origin": origin,
                       "Access-Control-Expose-Headers": "Retry-After"}
        else:
            r = httpx.post(f"{self.collector_url}{self.path}", content=body, timeout=30,
                           headers={"Content-Type": self.headers["Content-Type"],
                                    "Origin": origin})
            status, answer = r.status_code, r.content
            headers = {k: v for k, v in r.headers.items()
                       if k.lower().startswith("access-control-")}
        post["status"] = status
        self.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json",
                            "Content-Length": str(len(answer))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()
        post["answered"] = time.monotonic()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_tracker_waits_retry_after_then_delivers_once(
    database_url: str, collector_factory: Callable[..., Any], shop_site: tuple[str, Path],
    chromium: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    site, folder = shop_site
    collector = collector_factory(allowed_origins=[site])
    handler = type("Front", (_RefusingFront,), {"collector_url": collector.url, "posts": []})
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    front_url = f"http://127.0.0.1:{front.server_address[1]}"
    # tracker.js from the collector, events to the front (data-endpoint)
    (folder / "shop.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Shop</title>"
        f'<script async src="{collector.url}/v1/tracker.js" data-endpoint="{front_url}"'
        f' data-write-key="{collector.write_key}"></script></head><body></body></html>',
        encoding="utf-8",
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_context().new_page()
                page.set_default_timeout(30_000)
                page.goto(f"{site}/shop.html")  # the page_view goes at once: the 503
                page.wait_for_function("() => !!(window.crm && window.crm.clientId)")
                client_id = page.evaluate("crm.clientId()")
                for _ in range(100):
                    if handler.posts and "answered" in handler.posts[0]:
                        break
                    page.wait_for_timeout(50)
                # tracked while waiting: its 1 s batching delay must not cut the wait short
                search_id = page.evaluate("crm.track('search', {search_query: 'mugs'})")
                page.wait_for_function(DRAINED, polling=100)
                page.wait_for_timeout(1500)  # room for a stray extra send
            finally:
                browser.close()
    finally:
        front.shutdown()
        front.server_close()

    refused, *later = handler.posts
    assert refused["status"] == 503
    assert [p["status"] for p in later] == [202], "one retry, accepted"
    (retry,) = later
    waited = retry["arrived"] - refused["answered"]
    assert waited >= RETRY_AFTER - 0.02, f"retried {waited:.2f} s after a Retry-After: 3"
    # the refused events again, under the same event_ids, with the one tracked meanwhile
    assert sorted(retry["ids"]) == sorted([*refused["ids"], search_id])

    rows = _rows(database_url, client_id)
    assert sorted(r["event_id"] for r in rows) == sorted(retry["ids"])  # each stored once
    assert sorted(r["event_type"] for r in rows) == ["page_view", "search"]
