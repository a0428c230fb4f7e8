"""The control room in a real headless Chromium, as a data engineer uses it.

`crm ui` starts the webserver and the daemon on the project's PostgreSQL instance (a small
simulated shop already loaded); the browser opens the global asset graph, waits for the nodes
to render and saves a screenshot (the README's docs/images/asset-graph.png when
CRM_UPDATE_SCREENSHOT=1, else a temporary file), then opens one cheap asset, clicks
"Materialize" and watches the run reach Success on its page; GraphQL confirms the run and the
new materialisation.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from crm.settings import PROJECT_ROOT
from tests.dagster_shop import crm_ui, dagster_env, fill_shop, graphql  # noqa: F401
from tests.requirements import require
from tests.test_tracker_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("dagster_env")]

SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "asset-graph.png"
UPDATE_ENV = "CRM_UPDATE_SCREENSHOT"
# Cheap: one query over raw.events, no dbt, no model fit.
ASSET = ("ingestion", "raw_events_health")
VIEWPORT = {"width": 1600, "height": 1000}
# The asset groups the graph draws at least (ingestion, dbt layers, models, campaigns).
MIN_GROUPS = 7


@pytest.fixture(scope="module")
def control_room(database_url: str, dagster_env: Path) -> Iterator[str]:  # noqa: F811
    """`crm ui` on a free port over a small shop; yields the webserver's URL."""
    fill_shop(database_url, visitors=120, days=14)
    with crm_ui(seconds=180) as (url, _):
        yield url


# The graph's canvas (its viewport) and the drawing inside it, scaled by a CSS transform.
VIEWPORT_SEL = "[data-svg-viewport]"
DRAWING_SEL = "[data-svg-viewport] svg[width][height]"


def _overflow(page: Page) -> float:
    """How many times the drawing is larger than its viewport (<= 1 once it fits)."""
    view = page.locator(VIEWPORT_SEL).first.bounding_box()
    drawing = page.locator(DRAWING_SEL).first.bounding_box()
    assert view and drawing, "the asset graph is not on the page"
    return max(drawing["width"] / view["width"], drawing["height"] / view["height"])


def _fit_graph(page: Page) -> None:
    """Zoom (the mouse wheel over the canvas) until the whole graph is in view and fills most
    of it, then drag it to the middle: the asset graph opens fitted to its width only, so a
    graph taller than the window is cut at the bottom and a flat one is drawn small."""
    view = page.locator(VIEWPORT_SEL).first.bounding_box()
    assert view, "the asset graph is not on the page"
    centre = (view["x"] + view["width"] / 2, view["y"] + view["height"] / 2)
    page.mouse.move(*centre)
    page.keyboard.down("Control")  # a plain wheel pans the canvas; with Ctrl it zooms
    for _ in range(60):  # out until it fits, then in while it fills less than 3/4 of the view
        overflow = _overflow(page)
        if 0.75 <= overflow <= 0.97:
            break
        page.mouse.wheel(0, 40 if overflow > 0.97 else -20)
        page.wait_for_timeout(100)
    page.keyboard.up("Control")
    print(f"asset graph: {_overflow(page):.2f}x its view after zooming")
    drawing = page.locator(DRAWING_SEL).first.bounding_box()
    assert drawing
    page.mouse.down()
    page.mouse.move(centre[0] + (centre[0] - drawing["x"] - drawing["width"] / 2),
                    centre[1] + (centre[1] - drawing["y"] - drawing["height"] / 2), steps=10)
    page.mouse.up()
    page.wait_for_timeout(500)


MATERIALISATIONS = """
query ($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset { assetMaterializations(limit: 1) { runId } }
  }
}"""
RUN = """
query ($id: ID!) {
  runOrError(runId: $id) { ... on Run { status assetSelection { path } } }
}"""


RUNS = "{ runsOrError(limit: 20) { ... on Runs { results { runId } } } }"


def _run_ids(url: str) -> set[str]:
    return {r["runId"] for r in graphql(url, RUNS)["runsOrError"]["results"]}


def _new_run(url: str, before: set[str], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = _run_ids(url) - before
        if new:
            (run_id,) = new
            return run_id
        time.sleep(0.5)
    raise AssertionError(f"no run was launched from the page within {seconds:g} s")


def test_asset_graph_screenshot_and_materialise_from_the_page(control_room: str,
                                                               tmp_path: Path) -> None:
    require("chromium", CHROMIUM.exists(),
            f"{CHROMIUM} is absent (Debian's `chromium` package: `make browser`)")
    from playwright.sync_api import expect, sync_playwright

    url = control_room
    key = {"path": list(ASSET)}
    before = graphql(url, MATERIALISATIONS, {"key": key})["assetOrError"]
    runs_before = {m["runId"] for m in before.get("assetMaterializations", [])}
    runs_before_click = _run_ids(url)
    shot = SCREENSHOT if os.environ.get(UPDATE_ENV) == "1" else tmp_path / "asset-graph.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(90_000)
            try:
                # The global asset lineage: every group, dbt models beside the model assets.
                page.goto(f"{url}/asset-groups")
                # A first visit asks to join the community: skipped as a new user would.
                page.get_by_role("button", name="Skip", exact=True).click()
                expect(page.get_by_text("dbt_marts", exact=True).first).to_be_visible()
                # Groups start collapsed, named with their assets' count: the whole pipeline
                # at a readable size (expanded, a hundred assets are drawn too small to read).
                page.wait_for_load_state("networkidle")
                # The navigation and the asset list are folded away, for the graph's width.
                page.get_by_role("button", name="panel_show_right", exact=True).click()
                page.get_by_role("button", name="panel_show_right Hide").click()
                page.wait_for_timeout(500)
                _fit_graph(page)
                # Fitted, every group is drawn.
                shapes = page.locator(f"{DRAWING_SEL} foreignObject")
                expect(shapes.nth(MIN_GROUPS - 1)).to_be_attached()
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot))
                assert shot.stat().st_size > 20_000, "the screenshot is (nearly) blank"

                page.goto(f"{url}/assets/{'/'.join(ASSET)}")
                # (the button's name includes its icon's label: "materialization Materialize")
                page.get_by_role("button", name=re.compile(r"\bMaterialize$")).first.click()
                # The run the click queued (the daemon starts it), then its own page.
                run_id = _new_run(url, runs_before_click)
                page.goto(f"{url}/runs/{run_id}")
                expect(page.get_by_text("Success", exact=True).first).to_be_visible(
                    timeout=180_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))
                (tmp_path / "failure.html").write_text(page.content(), encoding="utf-8")
                print(f"page at failure: {page.url}; saved in {tmp_path}")
                raise
        finally:
            browser.close()

    run = graphql(url, RUN, {"id": run_id})["runOrError"]
    assert run["status"] == "SUCCESS", run
    assert [a["path"] for a in run["assetSelection"]] == [list(ASSET)]
    after = graphql(url, MATERIALISATIONS, {"key": key})["assetOrError"]
    latest = after["assetMaterializations"][0]["runId"]
    assert latest == run_id and latest not in runs_before
