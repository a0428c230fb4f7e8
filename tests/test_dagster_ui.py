"""`crm ui` as a data engineer starts it: the webserver and the daemon on the project's
PostgreSQL instance serve the asset graph and its checks over GraphQL, and SIGTERM stops every
process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from crm.settings import PROJECT_ROOT
from tests.dagster_shop import dagster_env  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dagster_env")]

NODES = "{ assetNodes { assetKey { path } hasAssetChecks } }"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    answer = httpx.post(f"{url}/graphql", json={"query": query}, timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_crm_ui_serves_the_graph_and_stops_with_its_children(database_url: str):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "crm", "ui", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "crm ui did not answer within 120 s"
            time.sleep(0.5)
        nodes = _graphql(url, NODES)["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"crm/users", "crm/client_ids", "crm/push_tokens", "ml/user_segments",
                "ml/user_recommendations", "ingestion/raw_events_health"} <= keys
        with_checks = {"/".join(n["assetKey"]["path"]) for n in nodes if n["hasAssetChecks"]}
        assert {"crm/users", "ml/user_segments", "ml/user_recommendations"} <= with_checks
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # dagster dev, the webserver, the daemon (and code servers)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    assert proc.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes of crm ui outlived it: {[p.cmdline() for p in alive]}"
