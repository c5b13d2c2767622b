"""The console's tool pages in a real browser: Debian's headless Chromium driven by
Selenium through Debian's chromedriver, against a real `idnode serve`.

An administrator signs in through the console's sign-in page, uploads a file of 200
identifiers with three bad lines and watches the progress bar finish with the bad lines
named; creates an API key (shown once), sees it authenticate /api/handles, revokes it
after the confirmation page and sees it refused; publishes a template version with an
error (shown at the field) and then a good one; applies for a prefix and sees its state
change when an operator approves it. Statuses are read with plain HTTP beside the
browser. Screenshots go to $IDNODE_SCREENSHOTS (default: a temporary directory).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import By, WebDriverWait, ec, sign_in
from tests.e2e.node_process import NodeProcess, init_registry
from tests.e2e.plain_http import NoRedirect

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-tools"
OPERATOR = "300:0.NA/88.166"
ADMIN_AUTH = "Basic " + base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
WAIT = 30.0  # seconds a page or a job may take on a loaded machine (not a timing check)
WINDOW_SIZE = "1100,1400"  # the browser fixture's window


def request(
    node: NodeProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body else None
    req = urllib.request.Request(node.http + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("tools")
    db, key, _ = init_registry(tmp, "tools", "--admin-secret", SECRET)
    n = NodeProcess(
        db,
        log=tmp / "tools.log",
        extra=("--secret-key-file", key, "--server-admins", OPERATOR),
    )
    try:
        n.wait_ready()
        yield n
    finally:
        assert n.stop() == 0, n.log_text()


@pytest.fixture(scope="module")
def browser(node: NodeProcess, browser: Any) -> Any:
    """The module's Chromium, signed in once through the console's own sign-in page."""
    sign_in(browser, node.http, "0.NA/88.166", SECRET, WAIT)
    return browser


def wait_for(browser: Any, by: str, what: str) -> Any:
    return WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((by, what)))


def cookie_header(browser: Any) -> str:
    return "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())


def test_upload_a_batch_and_watch_it_finish(
    node: NodeProcess, browser: Any, shots: Path, tmp_path: Path
) -> None:
    bad = {50: "{not json", 120: json.dumps({"handle": "88.166/UP-NOVALUES"})}
    bad[199] = json.dumps({"handle": "77.1/ELSEWHERE", "values": [{"index": 1, "type": "URL",
                          "data": {"format": "string", "value": "https://e.cn"}}]})  # fmt: skip
    lines = []
    for n in range(1, 201):
        lines.append(
            bad.get(n)
            or json.dumps(
                {
                    "handle": f"88.166/UP-{n}",
                    "values": [
                        {
                            "index": 1,
                            "type": "URL",
                            "data": {"format": "string", "value": f"https://e.cn/{n}"},
                        }
                    ],
                }
            )
        )
    upload = tmp_path / "identifiers.jsonl"
    upload.write_text("\n".join(lines) + "\n")

    browser.get(node.http + "/console/batches?lang=en")
    wait_for(browser, By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "upload-button").click()
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_element(By.ID, "job-state").get_attribute("data-state") == "done"
    )
    progress = browser.find_element(By.ID, "job-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "200"
    assert "197 ok, 3 failed" in browser.find_element(By.ID, "job-counts").text
    failed = browser.find_elements(By.CSS_SELECTOR, "#job-results tr.result-failed")
    named = {int(tr.get_attribute("data-line")): tr.text for tr in failed}
    assert sorted(named) == [50, 120, 199], named
    assert "not JSON" in named[50] and "88.166/UP-NOVALUES" in named[120]
    assert "77.1/ELSEWHERE" in named[199]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#job-results tbody tr")) == 200
    browser.find_element(By.ID, "only-problems").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#job-results tbody tr")) == 3
    browser.save_screenshot(str(shots / "console-batch-upload.png"))
    # written: a good line resolves
    status, body = request(node, "GET", "/api/handles/88.166/UP-200")
    assert status == 200, body
    # the upload endpoint refuses a post of the same session without its CSRF token (the
    # session is bound to the browser's User-Agent: sent as the browser sends it)
    same_session = {
        "Cookie": cookie_header(browser),
        "User-Agent": browser.execute_script("return navigator.userAgent"),
        "Content-Type": "application/x-ndjson",
    }
    status, body = request(node, "GET", "/console/batches/nosuchjob.json", headers=same_session)
    assert status == 404, body  # the session is good: the job is not
    status, body = request(node, "POST", "/console/batches", lines[0].encode(), same_session)
    assert status == 403, body
    # the page lists the upload among the recent ones, in Chinese by default
    browser.get(node.http + "/console/batches?lang=zh-CN")
    assert wait_for(browser, By.TAG_NAME, "h1").text == "批量上传"
    assert "已完成" in browser.find_element(By.ID, "jobs").text
    # the page polls the counters only (?results=false); the results are read once at the end
    link = browser.find_element(By.CSS_SELECTOR, "#jobs a").get_attribute("href")
    job_url = f"/console/batches/{link.rsplit('job=', 1)[1]}.json"
    status, body = request(node, "GET", job_url + "?results=false", headers=same_session)
    counters = json.loads(body)["job"]
    assert status == 200 and counters["done"] == 200 and "results" not in counters, body
    status, body = request(node, "GET", job_url, headers=same_session)
    assert status == 200 and len(json.loads(body)["job"]["results"]) == 200


def test_create_and_revoke_an_api_key(node: NodeProcess, browser: Any, shots: Path) -> None:
    browser.get(node.http + "/console/api-keys?lang=en")
    wait_for(browser, By.ID, "label").send_keys("ERP connector")
    browser.find_element(By.ID, "create-key-button").click()
    key = wait_for(browser, By.ID, "new-key").text
    assert key.startswith("idn_")
    browser.save_screenshot(str(shots / "console-api-keys.png"))
    bearer = {"Authorization": f"Bearer {key}"}
    status, body = request(node, "GET", "/api/handles?prefix=88.166", headers=bearer)
    assert status == 200, body
    row = browser.find_element(By.XPATH, "//table[@id='keys']//tr[td[3][text()='ERP connector']]")
    key_id = row.get_attribute("id").removeprefix("key-")
    # shown once: the list never holds the key itself
    browser.get(node.http + "/console/api-keys")
    assert key not in wait_for(browser, By.ID, "keys").text
    browser.find_element(By.ID, f"revoke-{key_id}").click()
    wait_for(browser, By.ID, "confirm-revoke").click()
    assert key_id in wait_for(browser, By.ID, "keys-notice").text
    assert not browser.find_elements(By.ID, f"key-{key_id}")
    status, body = request(node, "GET", "/api/handles?prefix=88.166", headers=bearer)
    assert status == 401, body


def test_publish_a_template_version_showing_its_error(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    # reached from the console's tool links: the templates page, then the prefix
    browser.get(node.http + "/console/batches?lang=en")
    wait_for(browser, By.LINK_TEXT, "Metadata templates").click()
    wait_for(browser, By.CSS_SELECTOR, "#template-prefixes a").click()
    wait_for(browser, By.ID, "no-templates")
    assert browser.current_url.endswith("/console/prefixes/88.166/templates")
    items: list[dict[str, Any]] = [
        {"key": "name", "index": 2001, "type": "string", "required": True},
        {"key": "weight", "index": 2002, "type": "colour"},
    ]
    doc = {"prefix": "88.166", "version": "1.0", "items": items}
    area = browser.find_element(By.ID, "document")
    browser.execute_script("arguments[0].value = arguments[1]", area, json.dumps(doc, indent=2))
    browser.find_element(By.ID, "publish-button").click()
    error = wait_for(browser, By.ID, "document-error").text
    assert "weight" in error and "type must be one of" in error, error
    # the text as typed is kept for correcting it
    assert '"colour"' in browser.find_element(By.ID, "document").get_attribute("value")
    browser.save_screenshot(str(shots / "console-template-error.png"))
    items[1]["type"] = "number"
    area = browser.find_element(By.ID, "document")
    browser.execute_script("arguments[0].value = arguments[1]", area, json.dumps(doc))
    browser.find_element(By.ID, "publish-button").click()
    assert "1.0" in wait_for(browser, By.ID, "template-published").text
    assert '"weight"' in browser.find_element(By.ID, "template-document").text
    assert browser.find_element(By.ID, "versions").text.split() == ["1.0"]
    status, body = request(node, "GET", "/api/templates/88.166")
    assert status == 200 and json.loads(body)["templates"][0]["version"] == "1.0"


def test_apply_for_a_prefix_and_see_it_decided(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    browser.get(node.http + "/console/applications?lang=en")
    wait_for(browser, By.ID, "prefix").send_keys("88.166.4004")
    browser.find_element(By.ID, "secret").send_keys("enterprise-secret")
    browser.find_element(By.ID, "contact_name").send_keys("Zhang San")
    browser.find_element(By.ID, "apply-button").click()
    notice = wait_for(browser, By.ID, "app-submitted").text
    assert "88.166.4004" in notice
    row = browser.find_element(By.CSS_SELECTOR, "#my-applications tbody tr")
    app_id = int(row.get_attribute("id").removeprefix("application-"))
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "pending"
    # the same prefix again is refused, the reason shown
    browser.find_element(By.ID, "prefix").send_keys("88.166.4004")
    browser.find_element(By.ID, "secret").send_keys("enterprise-secret")
    browser.find_element(By.ID, "apply-button").click()
    assert "pending" in wait_for(browser, By.ID, "app-problem").text
    status, body = request(
        node,
        "POST",
        f"/api/prefix-applications/{app_id}/approve",
        {"reason": "documents checked"},
        {"Authorization": ADMIN_AUTH, "Content-Type": "application/json"},
    )
    assert status == 200, body
    browser.get(node.http + "/console/applications?lang=en")
    row = wait_for(browser, By.ID, f"application-{app_id}")
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "approved"
    assert "documents checked" in row.text
    browser.save_screenshot(str(shots / "console-applications.png"))


def test_tool_pages_need_a_signed_in_administrator(node: NodeProcess) -> None:
    for path in ("/console/batches", "/console/api-keys", "/console/applications",
                 "/console/prefixes/88.166/templates", "/console/batches/abc.json",
                 "/console/templates"):  # fmt: skip
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(node.http + path, timeout=10)
            raise AssertionError(f"{path} answered without a session")
        except urllib.error.HTTPError as e:
            assert e.code == 303 and e.headers["Location"].startswith("/console/signin"), path
