"""`crm ui` as a data engineer starts it: the webserver and the daemon on the project's
PostgreSQL instance serve the asset graph and its checks over GraphQL, and SIGTERM stops every
process it started."""

from __future__ import annotations

import psutil
import pytest

from tests.dagster_shop import crm_ui, dagster_env, graphql  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dagster_env")]

NODES = "{ assetNodes { assetKey { path } hasAssetChecks } }"


def test_crm_ui_serves_the_graph_and_stops_with_its_children(database_url: str):
    with crm_ui() as (url, proc):
        nodes = graphql(url, NODES)["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert {"crm/users", "crm/client_ids", "crm/push_tokens", "ml/user_segments",
                "ml/user_recommendations", "ingestion/raw_events_health"} <= keys
        with_checks = {"/".join(n["assetKey"]["path"]) for n in nodes if n["hasAssetChecks"]}
        assert {"crm/users", "ml/user_segments", "ml/user_recommendations"} <= with_checks
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # dagster dev, the webserver, the daemon (and code servers)
    assert proc.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes of crm ui outlived it: {[p.cmdline() for p in alive]}"
