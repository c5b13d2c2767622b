"""The operator dashboard in a real browser: Debian's headless Chromium driven by Selenium
through Debian's chromedriver, against a real `idnode serve` with two workers and Redis.

A server administrator signs in, sees the registry and Redis healthy, watches
resolutions made over UDP and REST appear (count and rate, by the page's own refresh),
approves a pending prefix application (checked over REST); an administrator who is not
a server administrator gets 403. /api/dashboard is checked as JSON: its shape and who
may read it. Screenshots go to $IDNODE_SCREENSHOTS (default: a temporary directory).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idnode.resolver.client import exchange, resolution_request
from idnode.resolver.codec import ResponseCode
from tests.e2e.browser import By, WebDriverWait, ec, sign_in
from tests.e2e.node_process import NodeProcess, init_registry
from tests.e2e.plain_http import request

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-ops"
CLERK_SECRET = "clerk-secret"
OPERATOR = "300:0.NA/88.166"
WAIT = 20.0  # seconds a page or a refresh may take on a loaded machine (not a timing check)
WINDOW_SIZE = "1100,1400"  # the browser fixture's window


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


ADMIN_AUTH = basic("300%3A0.NA/88.166", SECRET)
CLERK_AUTH = basic("300%3A88.166/CLERK", CLERK_SECRET)


def text(index: int, vtype: str, value: str) -> dict[str, Any]:
    return {"index": index, "type": vtype, "data": {"format": "string", "value": value}}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[NodeProcess]:
    # The dashboard shows Redis's health: a real Redis (the session's, started here
    # when IDNODE_TEST_REDIS_URL names none).
    tmp = tmp_path_factory.mktemp("dashboard")
    db, key, _ = init_registry(tmp, "ops", "--admin-secret", SECRET)
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=f"dash-{uuid.uuid4().hex[:8]}",
        workers=2,  # the dashboard must show the node, not the worker that answers
        log=tmp / "ops.log",
        extra=(
            "--secret-key-file", key, "--server-admins", OPERATOR,
            "--statistics-flush", "1", "--quota-overrides", "88.166=1000",
        ),
    )  # fmt: skip
    try:
        n.wait_ready()
        auth = {"Authorization": ADMIN_AUTH}
        records = {
            "88.166/DASH-1": [text(1, "URL", "https://example.cn/1")],
            # an administrator of nothing much: not one of --server-admins
            "88.166/CLERK": [text(300, "HS_SECKEY", CLERK_SECRET)],
        }
        for handle, values in records.items():
            status, _, body = request(n, "PUT", f"/api/handles/{handle}", {"values": values}, auth)
            assert status == 201, body
        yield n
    finally:
        assert n.stop() == 0, n.log_text()


def open_dashboard(browser: Any, node: NodeProcess) -> None:
    browser.get(node.http + "/dashboard")
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "dashboard")))


def health_rows(browser: Any) -> dict[str, str]:
    """kind -> the state badge's class (state-ok, ...)."""
    out = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "#health tbody tr"):
        badge = tr.find_element(By.CSS_SELECTOR, ".state")
        out[tr.get_attribute("data-kind") or "?"] = badge.get_attribute("class") or ""
    return out


def figure(browser: Any, element_id: str) -> float | None:
    raw = browser.find_element(By.ID, element_id).text.replace(",", "").strip()
    return None if raw in ("", "—") else float(raw)


# --- the tests ------------------------------------------------------------------------------


def test_api_dashboard_is_for_server_admins_and_has_the_node_s_numbers(
    node: NodeProcess,
) -> None:
    status, _, body = request(node, "GET", "/api/dashboard")
    assert status == 401, body
    status, _, body = request(node, "GET", "/api/dashboard", headers={"Authorization": CLERK_AUTH})
    assert status == 403, body
    assert json.loads(body)["responseCode"] == ResponseCode.INSUFFICIENT_PERMISSIONS
    status, headers, body = request(
        node, "GET", "/api/dashboard", headers={"Authorization": ADMIN_AUTH}
    )
    assert status == 200, body
    assert "no-store" in headers["Cache-Control"]
    d = json.loads(body)["dashboard"]
    assert set(d) >= {"health", "traffic", "statistics", "applications", "quotas", "l1Entries"}
    parts = {p["kind"]: p for p in d["health"]["parts"]}
    assert parts["registry"]["state"] == "ok"
    assert parts["redis"]["state"] == "ok" and parts["redis"]["name"] == "Redis (standalone)"
    assert {c["tier"] for c in d["traffic"]["cache"]} == {"l1", "l2", "l3"}
    assert set(d["traffic"]) >= {"requests", "doors", "latency", "resolutions", "windowSeconds"}
    assert len(d["statistics"]["days"]) == 14
    assert d["quotas"]["enabled"] is True
    quota = {q["prefix"]: q for q in d["quotas"]["prefixes"]}["88.166"]
    # 88.166/DASH-1 and 88.166/CLERK were registered by the fixture
    assert quota["limit"] == 1000 and quota["used"] == 2 and quota["left"] == 998

    # A resolution over UDP is in the next reading whichever worker answers it: the
    # numbers are the node's (two workers, summed as /metrics sums them).
    before = d["traffic"]["resolutions"]["total"]
    for _ in range(6):
        m = exchange(node.server, resolution_request("88.166/DASH-1"), "udp")
        assert m.response_code == ResponseCode.SUCCESS
    status, _, body = request(node, "GET", "/api/dashboard", headers={"Authorization": ADMIN_AUTH})
    after = json.loads(body)["dashboard"]["traffic"]
    doors = {r["door"] for r in after["requests"]}
    assert "udp" in doors
    # each worker flushes its tally once a second: wait for those flushes, not a time
    deadline_reads = 0
    while after["resolutions"]["total"] < before + 6:
        deadline_reads += 1
        assert deadline_reads < 200, after["resolutions"]
        status, _, body = request(
            node, "GET", "/api/dashboard", headers={"Authorization": ADMIN_AUTH}
        )
        after = json.loads(body)["dashboard"]["traffic"]


def test_an_operator_watches_resolutions_arrive(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    sign_in(browser, node.http, "0.NA/88.166", SECRET, WAIT)
    open_dashboard(browser, node)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Operator dashboard"
    rows = health_rows(browser)
    assert "state-ok" in rows["registry"] and "state-ok" in rows["redis"], rows
    start = figure(browser, "resolutions-total") or 0.0
    for i in range(20):
        transport = "udp" if i % 2 else "http"
        m = exchange(node.server if transport == "udp" else f"127.0.0.1:{node.http_port}",
                     resolution_request("88.166/DASH-1"), transport)  # fmt: skip
        assert m.response_code == ResponseCode.SUCCESS
    for _ in range(5):
        status, _, _ = request(node, "GET", "/api/handles/88.166/DASH-1")
        assert status == 200
    # The page's script refreshes it from /api/dashboard: the count grows and a rate shows.
    WebDriverWait(browser, WAIT).until(
        lambda b: (
            (figure(b, "resolutions-total") or 0.0) >= start + 25
            and (figure(b, "resolutions-rate") or 0.0) > 0
        )
    )
    doors = {
        tr.find_elements(By.TAG_NAME, "td")[0].text
        for tr in browser.find_elements(By.CSS_SELECTOR, "#requests tbody tr")
    }
    assert {"udp", "http", "rest"} <= doors, doors
    # the per-prefix statistics reach the charts (flushed every second here)
    WebDriverWait(browser, WAIT).until(
        lambda b: b.execute_script(
            "const i = document.getElementById('chart-resolutions');"
            "return i.complete && i.naturalWidth > 0;"
        )
    )
    status, _, _ = request(
        node, "GET", "/dashboard/charts/resolutions.svg", headers={"Authorization": ADMIN_AUTH}
    )
    assert status == 303  # the charts are the console's: a session, not Basic
    browser.save_screenshot(str(shots / "dashboard.png"))
    browser.execute_script("document.getElementById('charts-section').scrollIntoView()")
    browser.save_screenshot(str(shots / "dashboard-charts.png"))


def test_an_operator_approves_a_pending_application(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    status, _, body = request(
        node,
        "POST",
        "/api/prefix-applications",
        {"prefix": "88.166.3003", "adminSecret": "enterprise", "hosted": True},
    )
    assert status == 201, body
    app_id = json.loads(body)["application"]["id"]
    sign_in(browser, node.http, "0.NA/88.166", SECRET, WAIT)
    open_dashboard(browser, node)
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, f"approve-{app_id}")))
    browser.save_screenshot(str(shots / "dashboard-applications.png"))
    browser.find_element(By.ID, f"approve-{app_id}").click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "notice")))
    assert "88.166.3003" in browser.find_element(By.ID, "notice").text
    assert not browser.find_elements(By.ID, f"approve-{app_id}")
    status, _, body = request(
        node, "GET", f"/api/prefix-applications/{app_id}", headers={"Authorization": ADMIN_AUTH}
    )
    assert status == 200 and json.loads(body)["application"]["status"] == "approved", body
    # the outcome came in the answer to the POST; a URL cannot announce one
    spoof = "/dashboard?done=approved&id=7&prefix=EVIL.PREFIX&failed=call+this+number"
    browser.get(node.http + spoof)
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "dashboard")))
    assert not browser.find_elements(By.ID, "notice")
    assert not browser.find_elements(By.ID, "problem")
    assert "EVIL.PREFIX" not in browser.find_element(By.TAG_NAME, "main").text


def test_a_decision_needs_the_csrf_token(node: NodeProcess, browser: Any) -> None:
    status, _, body = request(
        node,
        "POST",
        "/api/prefix-applications",
        {"prefix": "88.166.4004", "adminSecret": "e", "hosted": True},
    )
    assert status == 201, body
    app_id = json.loads(body)["application"]["id"]
    sign_in(browser, node.http, "0.NA/88.166", SECRET, WAIT)
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    ua = browser.execute_script("return navigator.userAgent")
    status, _, _ = request(
        node,
        "POST",
        f"/dashboard/applications/{app_id}/approve",
        headers={
            "Cookie": cookie,
            "User-Agent": ua,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 403
    status, _, body = request(
        node, "GET", f"/api/prefix-applications/{app_id}", headers={"Authorization": ADMIN_AUTH}
    )
    assert json.loads(body)["application"]["status"] == "pending", body


def test_an_administrator_who_is_not_a_server_admin_gets_403(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    status, headers, _ = request(node, "GET", "/dashboard")
    assert status == 303 and headers["Location"].startswith("/console/signin")
    sign_in(browser, node.http, "88.166/CLERK", CLERK_SECRET, WAIT)
    browser.get(node.http + "/dashboard?lang=en")
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Server administrators only"
    assert not browser.find_elements(By.ID, "dashboard")
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    ua = browser.execute_script("return navigator.userAgent")
    status, _, _ = request(node, "GET", "/dashboard", headers={"Cookie": cookie, "User-Agent": ua})
    assert status == 403
    browser.save_screenshot(str(shots / "dashboard-403.png"))
