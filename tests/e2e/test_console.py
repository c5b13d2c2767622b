"""The enterprise console in a real browser (Debian's headless Chromium through
Selenium) against a real `idnode serve` process: sign-in by secret (a wrong one shows
its error) and by a private key file proved in the page, CSRF refusals (plain HTTP
beside the browser), a prefix listed a page at a time by key range, an identifier
created, refused per field, edited and deleted through its template's form, and its
audit history (the page and GET /api/audit/{handle}).

Screenshots of the console pages go to $IDNODE_SCREENSHOTS (default: a temporary
directory, printed).
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from idnode.resolver.codec.keys import RsaPublicKey, encode_public_key
from tests.e2e.browser import By, WebDriverWait, ec, open_page
from tests.e2e.node_process import IDNODE, NodeProcess, init_registry
from tests.e2e.plain_http import NoRedirect, request

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-console"
ADMIN = "0.NA/88.166"
WAIT = 15.0  # seconds a page may take to appear on a loaded machine (not a timing check)
SCREENSHOT_PREFIX = "idnode-console-"  # the shots fixture's temporary directory
LISTED = 55  # handles under 88.166 beside the prefix's own: more than one page of 50


TEMPLATE = {
    "prefix": "88.166",
    "version": "v1",
    "industry": "C/34",
    "description": "液压阀",
    "items": [
        {"key": "productName", "index": 2001, "name": "产品名称", "required": True,
         "max_length": 20},
        {"key": "pressureMPa", "index": 2002, "name": "额定压力", "type": "number",
         "min": "0", "max": "100"},
        {"key": "madeOn", "index": 2003, "name": "生产日期", "type": "date"},
    ],
}  # fmt: skip


def basic() -> dict[str, str]:
    token = base64.b64encode(f"300%3A{ADMIN}:{SECRET}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def idis(node: NodeProcess, path: str, body: Any, token: str = "") -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = request(node, "POST", path, json.dumps(body).encode(), headers)
    assert status == 200, data
    answer: dict[str, Any] = json.loads(data)
    return answer


@pytest.fixture(scope="module")
def key_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A second admin key of 0.NA/88.166 (index 301): its PEM file (PKCS#1, as openssl
    genrsa writes) and its HS_PUBKEY data."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("key") / "admin301.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    n = key.public_key().public_numbers()
    return path, encode_public_key(RsaPublicKey(n.e, n.n))


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, key_pem: tuple[Path, bytes]
) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("console")
    db, key, _ = init_registry(tmp, "console", "--admin-secret", SECRET)
    n = NodeProcess(db, log=tmp / "console.log", extra=("--secret-key-file", key))
    try:
        n.wait_ready()
        login = idis(n, "/identity/token", {"username": f"300:{ADMIN}", "password": SECRET})
        token = login["data"]["token"]
        assert idis(n, "/snms/api/v5/template", TEMPLATE, token)["status"] == 1
        listed = [
            {
                "handle": f"88.166/LIST-{i:03d}",
                "value": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "u"}}],
            }
            for i in range(LISTED)
        ]
        assert idis(n, "/identityv2/data/batchCreate", listed, token)["status"] == 1
        pubkey = {
            "index": 301,
            "type": "HS_PUBKEY",
            "data": {"format": "base64", "value": base64.b64encode(key_pem[1]).decode()},
        }
        body = json.dumps({"values": [pubkey]}).encode()
        status, _, data = request(n, "PUT", f"/api/handles/{ADMIN}?index=301", body, basic())
        assert status == 200, data
        yield n
    finally:
        assert n.stop() == 0, n.log_text()


def wait_for(browser: Any, by: str, what: str) -> Any:
    try:
        return WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((by, what)))
    except Exception:
        print(browser.current_url, browser.find_element(By.TAG_NAME, "main").text)
        raise


def sign_in_with_secret(browser: Any, secret: str) -> None:
    form = browser.find_element(By.ID, "by-secret")
    for name, value in (("handle", ADMIN), ("index", "300"), ("secret", secret)):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.TAG_NAME, "button").click()


# --- the tests ------------------------------------------------------------------------------


def test_sign_in_with_a_secret(node: NodeProcess, browser: Any, shots: Path) -> None:
    open_page(browser, node.http + "/console?lang=zh-CN", (By.ID, "by-secret"))
    assert "/console/signin?next=%2Fconsole" in browser.current_url  # sent to sign in
    browser.save_screenshot(str(shots / "console-signin.png"))
    sign_in_with_secret(browser, "not-the-secret")
    problem = wait_for(browser, By.ID, "signin-problem")
    assert "登录失败" in problem.text and "300:0.NA/88.166" in problem.text
    sign_in_with_secret(browser, SECRET)
    prefixes = wait_for(browser, By.ID, "prefixes")
    assert browser.current_url == node.http + "/console"
    assert prefixes.text.split() == ["88.166"]
    assert "300:0.NA/88.166" in browser.find_element(By.CLASS_NAME, "who").text
    cookie = browser.get_cookie("idnode_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP on loopback; over TLS it is Secure
    browser.save_screenshot(str(shots / "console-home.png"))


def test_a_state_change_needs_the_csrf_token(node: NodeProcess) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    form = urllib.parse.urlencode(
        {"method": "secret", "handle": ADMIN, "index": "300", "secret": SECRET}
    ).encode()
    status, headers, _ = request(node, "POST", "/console/signin", form, opener=opener)
    assert status == 303 and headers["Location"] == "/console"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    status, _, page = request(node, "GET", "/console", opener=opener)
    assert status == 200
    m = re.search(rb'name="csrf" value="([0-9a-f]+)"', page)
    assert m is not None
    csrf = m.group(1).decode()
    target = "/console/handles/88.166/CSRF-1"
    fields = {"mode": "create", "v2001": "HV-CSRF"}
    no_token = urllib.parse.urlencode(fields).encode()
    status, _, body = request(node, "POST", target, no_token, opener=opener)
    assert status == 403 and b"CSRF" in body
    wrong = urllib.parse.urlencode({**fields, "csrf": "0" * len(csrf)}).encode()
    assert request(node, "POST", target, wrong, opener=opener)[0] == 403
    with_token = urllib.parse.urlencode({**fields, "csrf": csrf}).encode()
    cross = {"Origin": "http://evil.example"}
    assert request(node, "POST", target, with_token, cross, opener=opener)[0] == 403
    # nothing was written by the refused posts
    assert request(node, "GET", "/api/handles/88.166/CSRF-1")[0] == 404
    status, headers, _ = request(node, "POST", target, with_token, opener=opener)
    assert status == 303 and headers["Location"].endswith("/88.166/CSRF-1?saved")
    # the cookie alone, from another program (another User-Agent), finds no session
    cookie = next(c for c in jar if c.name == "idnode_console")
    alone = {"Cookie": f"idnode_console={cookie.value}", "User-Agent": "curl/8"}
    status, headers, _ = request(node, "GET", "/console", headers=alone)
    assert status == 303 and headers["Location"].startswith("/console/signin")
    # signed out, the same cookie is dead
    out = urllib.parse.urlencode({"csrf": csrf}).encode()
    assert request(node, "POST", "/console/signout", out, opener=opener)[0] == 303
    status, headers, _ = request(node, "GET", "/console", opener=opener)
    assert status == 303


def test_sign_in_with_an_api_key(node: NodeProcess) -> None:
    made = subprocess.run(
        [IDNODE, "apikey", "create", "--admin", f"300:{ADMIN}", "--label", "console test",
         "--database-url", node.database_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    key = made.stdout.split()[0]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    wrong = urllib.parse.urlencode({"method": "apikey", "apikey": "idk_" + "0" * 40}).encode()
    status, _, page = request(node, "POST", "/console/signin?lang=en", wrong, opener=opener)
    assert status == 401 and b"Sign-in failed" in page
    assert "idnode_console" not in {c.name for c in jar}
    form = urllib.parse.urlencode({"method": "apikey", "apikey": key}).encode()
    status, headers, _ = request(node, "POST", "/console/signin", form, opener=opener)
    assert status == 303 and headers["Location"] == "/console"
    status, _, page = request(node, "GET", "/console", opener=opener)
    assert status == 200 and b"300:0.NA/88.166" in page
    # the key revoked, the console session it opened is over at its next request
    subprocess.run(
        [IDNODE, "apikey", "revoke", key, "--database-url", node.database_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    status, headers, _ = request(node, "GET", "/console", opener=opener)
    assert status == 303 and headers["Location"].startswith("/console/signin")


def test_a_prefix_is_listed_a_page_at_a_time(node: NodeProcess, browser: Any, shots: Path) -> None:
    open_page(browser, node.http + "/console", (By.ID, "prefixes"))
    browser.find_element(By.LINK_TEXT, "88.166").click()
    first = [a.text for a in wait_for(browser, By.ID, "handles").find_elements(By.TAG_NAME, "a")]
    assert len(first) == 50 and first == sorted(first)
    browser.save_screenshot(str(shots / "console-prefix.png"))
    browser.find_element(By.ID, "next-page").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("after="))
    second = [a.text for a in wait_for(browser, By.ID, "handles").find_elements(By.TAG_NAME, "a")]
    assert second and not set(first) & set(second) and second == sorted(second)
    listed = {f"88.166/LIST-{i:03d}" for i in range(LISTED)}
    assert listed <= set(first) | set(second)  # every one, on one page or the other
    assert not browser.find_elements(By.ID, "next-page")  # the last page


def field_error(browser: Any, index: int) -> str:
    return str(
        browser.find_element(By.ID, f"field-{index}").find_element(By.CLASS_NAME, "error").text
    )


def fill(browser: Any, values: dict[str, str]) -> None:
    form = browser.find_element(By.ID, "handle-form")
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        if value:
            field.send_keys(value)


def test_an_identifier_through_the_template_form(
    node: NodeProcess, browser: Any, shots: Path
) -> None:
    open_page(browser, node.http + "/console/prefixes/88.166?lang=en", (By.ID, "suffix"))
    browser.find_element(By.ID, "suffix").send_keys("VALVE-7")
    browser.find_element(By.ID, "new-handle").find_element(By.TAG_NAME, "button").click()
    wait_for(browser, By.ID, "handle-form")
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".field label")]
    assert [lbl.split()[0] for lbl in labels] == ["产品名称", "额定压力", "生产日期"]
    # the required name left out and a pressure out of range: each error beside its field
    # (the input's maxlength keeps a too-long name from being typed at all)
    assert browser.find_element(By.ID, "v2001").get_attribute("maxlength") == "20"
    fill(browser, {"v2001": "", "v2002": "150"})
    browser.find_element(By.ID, "save").click()
    wait_for(browser, By.CSS_SELECTOR, ".field.invalid")
    assert "required" in field_error(browser, 2001)
    assert "at most 100" in field_error(browser, 2002)
    assert not browser.find_element(By.ID, "field-2003").find_elements(By.CLASS_NAME, "error")
    assert browser.find_element(By.ID, "v2002").get_attribute("value") == "150"  # kept
    browser.save_screenshot(str(shots / "console-form-errors.png"))
    assert request(node, "GET", "/api/handles/88.166/VALVE-7")[0] == 404  # nothing written
    fill(browser, {"v2001": "HV-200", "v2002": "31.5"})
    browser.find_element(By.ID, "save").click()
    wait_for(browser, By.ID, "saved")
    status, _, body = request(node, "GET", "/api/handles/88.166/VALVE-7")
    assert status == 200
    data = {v["index"]: v["data"]["value"] for v in json.loads(body)["values"]}
    assert data == {1001: "v1", 2001: "HV-200", 2002: "31.5"}
    # meanwhile another writer changes the pressure over REST
    pressure = [{"index": 2002, "type": "pressureMPa", "data": "40"}]
    body = json.dumps({"values": pressure}).encode()
    status, _, _ = request(node, "PUT", "/api/handles/88.166/VALVE-7?index=2002", body, basic())
    assert status == 200
    # edit: a date added, the name changed; the form was made before that write, so
    # saving is refused rather than silently undoing it
    fill(browser, {"v2001": "HV-300"})
    # a date input's typing follows the browser's locale: set it as its picker would
    date = browser.find_element(By.ID, "v2003")
    browser.execute_script("arguments[0].value = arguments[1]", date, "2026-03-01")
    browser.find_element(By.ID, "save").click()
    assert "changed while you were editing" in wait_for(browser, By.ID, "form-errors").text
    status, _, body = request(node, "GET", "/api/handles/88.166/VALVE-7")
    data = {v["index"]: v["data"]["value"] for v in json.loads(body)["values"]}
    assert data == {1001: "v1", 2001: "HV-200", 2002: "40"}  # the console wrote nothing
    fill(browser, {"v2002": "40"})  # keep the other writer's pressure, save again
    browser.find_element(By.ID, "save").click()
    wait_for(browser, By.ID, "saved")
    assert browser.find_element(By.ID, "v2001").get_attribute("value") == "HV-300"
    browser.save_screenshot(str(shots / "console-form.png"))
    status, _, body = request(node, "GET", "/api/handles/88.166/VALVE-7")
    data = {v["index"]: v["data"]["value"] for v in json.loads(body)["values"]}
    assert data == {1001: "v1", 2001: "HV-300", 2002: "40", 2003: "2026-03-01"}
    # its history: the page, and the same over REST
    browser.find_element(By.ID, "history-link").click()
    table = wait_for(browser, By.ID, "history")
    ops = [td.text for td in table.find_elements(By.CSS_SELECTOR, "tbody td.type:nth-child(2)")]
    assert ops[-1] == "CREATE" and len(ops) >= 2  # newest first: the edit above the create
    assert "300:0.NA/88.166" in table.text
    browser.save_screenshot(str(shots / "console-history.png"))
    status, _, body = request(node, "GET", "/api/audit/88.166/VALVE-7", headers=basic())
    entries = json.loads(body)["entries"]
    assert status == 200 and [e["op"] for e in entries] == ops
    assert request(node, "GET", "/api/audit/88.166/VALVE-7")[0] == 401
    # delete, confirmed on its own page
    browser.back()
    wait_for(browser, By.ID, "delete-link").click()
    wait_for(browser, By.ID, "confirm-delete").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains("/console/prefixes/88.166"))
    assert request(node, "GET", "/api/handles/88.166/VALVE-7")[0] == 404
    status, _, body = request(node, "GET", "/api/audit/88.166/VALVE-7", headers=basic())
    assert json.loads(body)["entries"][0]["op"] == "DELETE"


def test_sign_in_with_a_key_file(
    node: NodeProcess, browser: Any, key_pem: tuple[Path, bytes], shots: Path
) -> None:
    open_page(browser, node.http + "/console", (By.ID, "signout"))
    browser.find_element(By.ID, "signout").click()
    form = wait_for(browser, By.ID, "by-keyfile")
    form.find_element(By.NAME, "handle").send_keys(ADMIN)
    index = form.find_element(By.NAME, "index")
    index.clear()
    index.send_keys("301")
    form.find_element(By.ID, "k-file").send_keys(str(key_pem[0]))
    form.find_element(By.TAG_NAME, "button").click()
    who = wait_for(browser, By.CLASS_NAME, "who")
    assert "301:0.NA/88.166" in who.text
    log = node.log_text()
    assert "301:0.NA/88.166 signed in (keyfile)" in log
    assert "PRIVATE KEY" not in log


def http_sign_in(node: NodeProcess, handle: str, secret: str) -> urllib.request.OpenerDirector:
    """A console session over plain HTTP (the cookie in a jar)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    form = {"method": "secret", "handle": handle, "index": "300", "secret": secret}
    body = urllib.parse.urlencode(form).encode()
    status, _, page = request(node, "POST", "/console/signin", body, opener=opener)
    assert status == 303, page
    return opener


def hidden(page: bytes, name: str) -> str:
    m = re.search(rb'name="' + name.encode() + rb'" value="([^"]*)"', page)
    assert m is not None, name
    return m.group(1).decode()


def test_restricted_values_stay_restricted_through_the_console(node: NodeProcess) -> None:
    """An administrator of nothing here sees only the public values of a handle in the
    console; an administrator's save of another field keeps a restricted value's
    permissions and TTL (it does not become public). A console session ends when the
    secret it was opened with changes."""
    clerk = [{"index": 300, "type": "HS_SECKEY", "data": "clerk-secret"}]
    restricted = [
        {"index": 1001, "type": "TEMPLATE", "data": "v1"},
        {"index": 2001, "type": "productName", "data": "HV-9"},
        {"index": 2002, "type": "pressureMPa", "data": "77.125", "permissions": "1100",
         "ttl": 60},
    ]  # fmt: skip
    for handle, values in (("88.166/CLERK", clerk), ("88.166/SECRET-1", restricted)):
        body = json.dumps({"values": values}).encode()
        status, _, data = request(node, "PUT", f"/api/handles/{handle}", body, basic())
        assert status == 201, data
    path = "/console/handles/88.166/SECRET-1"
    other = http_sign_in(node, "88.166/CLERK", "clerk-secret")  # not in 88.166's HS_ADMIN
    for query in ("", "?delete"):
        status, _, page = request(node, "GET", path + query, opener=other)
        assert status == 200 and b"77.125" not in page, page
    assert b"HV-9" in request(node, "GET", path, opener=other)[2]

    admin = http_sign_in(node, ADMIN, SECRET)
    status, _, page = request(node, "GET", path, opener=admin)
    assert status == 200 and b"77.125" in page
    form = {
        "csrf": hidden(page, "csrf"),
        "seen": hidden(page, "seen"),
        "template": "v1",
        "v2001": "HV-10",
        "v2002": "77.125",
    }
    body = urllib.parse.urlencode(form).encode()
    status, headers, page = request(node, "POST", path, body, opener=admin)
    assert status == 303 and headers["Location"].endswith("?saved"), page
    status, _, data = request(node, "GET", "/api/handles/88.166/SECRET-1")
    public = {v["index"]: v for v in json.loads(data)["values"]}
    assert public[2001]["data"]["value"] == "HV-10" and 2002 not in public
    status, _, data = request(node, "GET", "/api/handles/88.166/SECRET-1", headers=basic())
    stored = {v["index"]: v for v in json.loads(data)["values"]}[2002]
    assert stored["permissions"] == "1100" and stored["ttl"] == 60, stored

    # the console home lists the prefixes each holds: the admin 88.166, the clerk none
    status, _, page = request(node, "GET", "/console", opener=other)
    assert status == 200 and b'href="/console/prefixes/88.166"' not in page
    assert b'href="/console/prefixes/88.166"' in request(node, "GET", "/console", opener=admin)[2]
    # the clerk's secret changed, the console session opened with the old one is over
    body = json.dumps({"values": [{**clerk[0], "data": "new-clerk-secret"}]}).encode()
    status, _, data = request(node, "PUT", "/api/handles/88.166/CLERK?index=300", body, basic())
    assert status == 200, data
    status, headers, _ = request(node, "GET", "/console", opener=other)
    assert status == 303 and headers["Location"].startswith("/console/signin")
    assert request(node, "GET", "/console", opener=admin)[0] == 200  # another admin's: kept
