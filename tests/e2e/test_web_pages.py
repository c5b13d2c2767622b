"""The resolution pages in a real browser: Debian's headless Chromium driven by
Selenium through Debian's chromedriver, against a real `idnode serve` process and a
product page served on loopback (where a handle's URL value points).

Statuses and headers are read with plain HTTP beside the browser (a browser does not
show them). Screenshots of the main pages go to $IDNODE_SCREENSHOTS (default: a
temporary directory, printed) for the issue's note.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import By, WebDriverWait, ec, open_page
from tests.e2e.node_process import NodeProcess, init_registry
from tests.e2e.plain_http import request

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-web"
WRONG = "not-the-secret"
ADMIN_USER = "300:0.NA/88.166"  # as a person types it in the browser's dialog
WAIT = 15.0  # seconds a page may take to appear on a loaded machine (not a timing check)


# --- the product site a handle points to --------------------------------------------------


class Product(BaseHTTPRequestHandler):
    """The enterprise's own pages: /product/<n> and a page of handle links."""

    node_http = ""

    def do_GET(self) -> None:
        if self.path.startswith("/product/"):
            body = f"<!doctype html><title>Product</title><h1 id=p>{self.path}</h1>"
        elif self.path == "/links":
            link = f"{self.node_http}/88.166/WEB-1"
            body = f"<!doctype html><title>Links</title><a id=go href='{link}'>88.166/WEB-1</a>"
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Product)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- the node and its handles -------------------------------------------------------------


SITE = {
    "format": "site",
    "value": {
        "serialNumber": 1,
        "servers": [
            {
                "serverId": 1,
                "address": "127.0.0.9",
                "interfaces": [{"query": True, "admin": True, "protocol": "TCP", "port": 2641}],
            }
        ],
    },
}


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def text(index: int, vtype: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "type": vtype, "data": {"format": "string", "value": value}, **extra}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, site: str) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("web")
    db, key, _ = init_registry(tmp, "web", "--admin-secret", SECRET)
    n = NodeProcess(db, log=tmp / "web.log", extra=("--secret-key-file", key))
    try:
        n.wait_ready()
        Product.node_http = n.http
        auth = {
            "Authorization": basic("300%3A0.NA/88.166", SECRET),
            "Content-Type": "application/json",
        }
        records: dict[str, list[dict[str, Any]]] = {
            "88.166/WEB-1": [
                text(1, "URL", f"{site}/product/1"),
                text(2, "EMAIL", "qa@example.cn"),
                text(3, "productName", "液压阀 HV-001"),
                {"index": 4, "type": "BLOB", "data": {"format": "base64", "value": "AAEC/w=="}},
                text(5, "SECRET", "only-for-admins", permissions="1100"),
                {
                    "index": 100,
                    "type": "HS_ADMIN",
                    "data": {
                        "format": "admin",
                        "value": {
                            "handle": "0.NA/88.166",
                            "index": 300,
                            "permissions": "011111111111",
                        },
                    },
                },
            ],
            "88.166/NOURL": [text(1, "DESC", "no address here")],
            # 88.166.1001 delegated to another node's site: its handles get a referral
            "0.NA/88.166.1001": [{"index": 1, "type": "HS_SITE", "data": SITE}],
            "88.166/ALIAS-1": [text(1, "HS_ALIAS", "88.166/ALIAS-2")],
            "88.166/ALIAS-2": [text(1, "HS_ALIAS", "88.166/WEB-1")],
            "88.166/LOOP-A": [text(1, "HS_ALIAS", "88.166/LOOP-B")],
            "88.166/LOOP-B": [text(1, "HS_ALIAS", "88.166/LOOP-A")],
        }
        for handle, values in records.items():
            status, _, body = request(
                node=n,
                method="PUT",
                path=f"/api/handles/{handle}",
                body={"values": values},
                headers=auth,
            )
            assert status == 201, body
        yield n
    finally:
        assert n.stop() == 0, n.log_text()


# --- the browser --------------------------------------------------------------------------


def cells(browser: Any) -> dict[str, str]:
    """The record table: type -> the data cell's text."""
    out = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "table#values tbody tr"):
        out[tr.get_attribute("data-type")] = tr.find_elements(By.TAG_NAME, "td")[4].text
    return out


def set_header(browser: Any, headers: dict[str, str]) -> None:
    """Extra request headers for the browser's next loads (Chrome DevTools Protocol): the
    credentials a person would type into the Basic dialog."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


# --- the tests ------------------------------------------------------------------------------


def test_a_handle_link_lands_on_the_product_page(
    node: NodeProcess, site: str, browser: Any
) -> None:
    open_page(browser, f"{site}/links", (By.ID, "go"))
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, WAIT).until(ec.url_to_be(f"{site}/product/1"))
    assert browser.find_element(By.ID, "p").text == "/product/1"
    status, headers, _ = request(node, "GET", "/88.166/WEB-1")
    assert status == 302 and headers["Location"] == f"{site}/product/1"


def test_the_search_form_opens_a_handle(
    node: NodeProcess, site: str, browser: Any, shots: Path
) -> None:
    open_page(browser, node.http + "/?lang=zh-CN", (By.ID, "q"))
    assert "标识解析" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.save_screenshot(str(shots / "search-form.png"))
    box = browser.find_element(By.ID, "q")
    box.send_keys("88.166/WEB-1")
    box.submit()
    WebDriverWait(browser, WAIT).until(ec.url_to_be(f"{site}/product/1"))
    # "show the record" ticked: the record page instead of the redirect
    open_page(browser, node.http + "/", (By.ID, "q"))
    browser.find_element(By.ID, "q").send_keys("88.166/WEB-1")
    browser.find_element(By.NAME, "noredirect").click()
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "values")))
    assert browser.find_element(By.ID, "handle").text == "88.166/WEB-1"


def test_noredirect_shows_the_record(
    node: NodeProcess, site: str, browser: Any, shots: Path
) -> None:
    open_page(browser, node.http + "/88.166/WEB-1?noredirect&lang=en", (By.ID, "values"))
    got = cells(browser)
    assert got["URL"] == f"{site}/product/1"
    assert browser.find_element(By.LINK_TEXT, f"{site}/product/1").get_attribute("href") == (
        f"{site}/product/1"
    )
    assert got["EMAIL"] == "qa@example.cn"
    assert got["productName"] == "液压阀 HV-001"
    assert "4 bytes" in got["BLOB"] and "00 01 02 ff" in got["BLOB"]  # binary, as hex
    # HS_ADMIN as an administrator and named permissions, not base64
    assert "300:0.NA/88.166" in got["HS_ADMIN"] and "add value" in got["HS_ADMIN"]
    assert "SECRET" not in got  # not public: withheld without ?auth
    assert "only-for-admins" not in browser.page_source
    assert browser.save_screenshot(str(shots / "record-en.png"))
    open_page(browser, node.http + "/88.166/WEB-1?noredirect&lang=zh-CN", (By.ID, "values"))
    assert "添加值" in cells(browser)["HS_ADMIN"]
    assert browser.save_screenshot(str(shots / "record-zh.png"))


def test_index_and_type_select_values(node: NodeProcess, browser: Any) -> None:
    open_page(browser, node.http + "/88.166/WEB-1?noredirect&type=EMAIL", (By.ID, "values"))
    assert list(cells(browser)) == ["EMAIL"]
    open_page(browser, node.http + "/88.166/WEB-1?noredirect&index=1&index=3", (By.ID, "values"))
    assert sorted(cells(browser)) == ["URL", "productName"]
    open_page(browser, node.http + "/88.166/WEB-1?type=NOSUCH", (By.ID, "no-values"))
    # ?type= without a URL among the values chosen: the page, not a redirect
    status, _, _ = request(node, "GET", "/88.166/WEB-1?type=EMAIL")
    assert status == 200
    status, _, _ = request(node, "GET", "/88.166/WEB-1?index=x")
    assert status == 400


def test_not_found_and_not_homed_pages(node: NodeProcess, browser: Any, shots: Path) -> None:
    status, headers, body = request(node, "GET", "/88.166/NOPE?lang=en")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "This node has no handle 88.166/NOPE." in body.decode()
    open_page(browser, node.http + "/88.166/NOPE?lang=zh-CN", (By.ID, "title"))
    assert browser.find_element(By.ID, "title").text == "标识不存在"
    assert "88.166/NOPE" in browser.find_element(By.ID, "message").text
    assert browser.save_screenshot(str(shots / "not-found.png"))
    status, _, body = request(node, "GET", "/99.9/x?lang=en")
    assert status == 400 and "is not homed on this node" in body.decode()
    # delegated to another node: where to ask instead (status 300, as the REST API)
    status, _, body = request(node, "GET", "/88.166.1001/X?lang=en")
    assert status == 300, body
    assert b"0.NA/88.166.1001" in body and b"127.0.0.9" in body and b"TCP/2641" in body
    status, _, body = request(node, "GET", "/no-slash?lang=en")
    assert status == 400 and "Invalid handle" in body.decode()


def test_the_language_switch(node: NodeProcess, browser: Any) -> None:
    browser.delete_all_cookies()
    open_page(browser, node.http + "/88.166/WEB-1?noredirect", (By.ID, "values"))
    assert browser.find_element(By.CSS_SELECTOR, "h1 .label").text == "标识记录"  # the default
    browser.find_element(By.LINK_TEXT, "English").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h1 .label"), "Handle record")
    )
    assert browser.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "en"
    # remembered: a page opened afterwards without ?lang is English too
    open_page(browser, node.http + "/88.166/NOPE", (By.ID, "title"))
    assert browser.find_element(By.ID, "title").text == "Handle not found"
    browser.find_element(By.LINK_TEXT, "中文").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.ID, "title"), "标识不存在")
    )


def test_accept_json_gives_the_rest_answer(node: NodeProcess) -> None:
    import asyncio

    import aiohttp

    async def fetch() -> tuple[Any, Any, Any]:
        async with aiohttp.ClientSession() as s:
            json_accept = {"Accept": "application/json"}
            async with s.get(node.http + "/88.166/WEB-1", headers=json_accept) as r:
                assert r.status == 200 and r.content_type == "application/json"
                page = await r.json()
            async with s.get(node.http + "/api/handles/88.166/WEB-1") as r:
                api = await r.json()
            async with s.get(node.http + "/88.166/NOPE", headers=json_accept) as r:
                missing = (r.status, await r.json())
        return page, api, missing

    page, api, missing = asyncio.run(fetch())
    assert page == api and page["handle"] == "88.166/WEB-1"
    assert {v["type"] for v in page["values"]} >= {"URL", "EMAIL", "HS_ADMIN"}
    assert missing == (
        404,
        {"responseCode": 100, "handle": "88.166/NOPE", "message": "Handle not found"},
    )


def test_auth_shows_non_public_values_to_the_administrator(node: NodeProcess, browser: Any) -> None:
    status, headers, body = request(node, "GET", "/88.166/WEB-1?noredirect&auth&lang=en")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert b"Authentication required" in body
    # Wrong credentials: asked again (a browser shows its dialog), nothing restricted shown.
    # Read with plain HTTP: headless Chromium waits on its dialog instead of the page.
    wrong = {"Authorization": basic(ADMIN_USER, WRONG)}
    status, headers, body = request(
        node, "GET", "/88.166/WEB-1?noredirect&auth&lang=en", headers=wrong
    )
    assert status == 401 and "WWW-Authenticate" in headers
    assert b"authentication of 300:0.NA/88.166 failed" in body and b"only-for-admins" not in body
    try:
        set_header(browser, {"Authorization": basic(ADMIN_USER, SECRET)})
        open_page(browser, node.http + "/88.166/WEB-1?noredirect&auth", (By.ID, "values"))
        assert cells(browser)["SECRET"] == "only-for-admins"
        assert "300:0.NA/88.166" in browser.find_element(By.ID, "auth-note").text
    finally:
        set_header(browser, {})
    # the same page without ?auth: public values only, though the browser sent nothing else
    open_page(browser, node.http + "/88.166/WEB-1?noredirect", (By.ID, "values"))
    assert "SECRET" not in cells(browser)
    status, headers, body = request(
        node, "GET", "/88.166/WEB-1?auth", headers={"Authorization": basic(ADMIN_USER, SECRET)}
    )
    assert status == 200 and b"only-for-admins" in body  # ?auth shows, never redirects
    assert "no-store" in headers["Cache-Control"]


def test_aliases_are_followed_and_loops_refused(node: NodeProcess, site: str, browser: Any) -> None:
    open_page(browser, node.http + "/88.166/ALIAS-1", (By.ID, "p"))
    assert browser.current_url == f"{site}/product/1"  # ALIAS-1 -> ALIAS-2 -> WEB-1
    open_page(browser, node.http + "/88.166/ALIAS-1?noredirect", (By.ID, "values"))
    chain = browser.find_element(By.ID, "alias-chain").text
    assert "88.166/ALIAS-1 → 88.166/ALIAS-2 → 88.166/WEB-1" in chain
    assert cells(browser)["EMAIL"] == "qa@example.cn"
    status, _, body = request(node, "GET", "/88.166/LOOP-A?lang=en")
    assert status == 508
    assert "88.166/LOOP-A → 88.166/LOOP-B → 88.166/LOOP-A" in body.decode()
    open_page(browser, node.http + "/88.166/LOOP-A?lang=en", (By.ID, "title"))
    assert browser.find_element(By.ID, "title").text == "Alias loop"


def test_static_files_and_other_routes(node: NodeProcess) -> None:
    status, _, body = request(node, "GET", "/?lang=en")
    assert status == 200
    css = body.decode().split('rel="stylesheet" href="', 1)[1].split('"', 1)[0]
    status, headers, body = request(node, "GET", css)
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    assert "immutable" in headers["Cache-Control"] and b"@media" in body
    status, again, _ = request(node, "GET", css, headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and again["ETag"] == headers["ETag"]
    assert b"http" not in body  # nothing fetched from elsewhere (no CDN, no web fonts)
    # the node's other resources are not handles
    assert request(node, "GET", "/healthz")[0] == 200
    assert request(node, "GET", "/api/nothing")[0] == 404
    status, headers, _ = request(node, "GET", "/88.166/NOURL")
    assert status == 200  # no URL value: the record page
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_pages_on_a_phone(node: NodeProcess, browser: Any, shots: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, node.http + "/88.166/WEB-1?noredirect&lang=zh-CN", (By.ID, "values"))
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390  # no sideways scrolling: the table became cards
        assert browser.save_screenshot(str(shots / "record-phone.png"))
    finally:
        browser.set_window_size(1100, 900)
