"""The web pages' pure parts: the catalogues, content negotiation, browser credentials,
and how values are shown (the pages themselves run in Chromium: tests/e2e/test_web_pages.py)."""

from __future__ import annotations

import base64

import pytest
from aiohttp.test_utils import make_mocked_request

from idnode.resolver.codec import HandleValue
from idnode.resolver.codec.admin import AdminRecord, encode_admin
from idnode.resolver.codec.codes import AdminPermission
from idnode.resolver.web.assets import environment, load_static
from idnode.resolver.web.i18n import MESSAGES, Translator
from idnode.resolver.web.pages import browser_basic, handle_url, parse_handle, wants_json
from idnode.resolver.web.values import alias_target, data_view, redirect_url


def test_every_language_has_every_message() -> None:
    keys = [set(m) for m in MESSAGES.values()]
    assert all(k == keys[0] for k in keys)
    # every permission an HS_ADMIN can hold has a name in each language
    for perm in AdminPermission:
        assert all(f"perm.{perm.name}" in m for m in MESSAGES.values())
    assert Translator("en")("record_values", n=3) == "3 values"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json", True),
        ("application/json, */*", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("text/html, application/json;q=0.5", False),
        ("application/json;q=0.9, text/html;q=0.5", True),
        ("application/json;q=0", False),
        ("", False),
    ],
)
def test_content_negotiation(accept: str, expected: bool) -> None:
    request = make_mocked_request("GET", "/88.166/x", headers={"Accept": accept})
    assert wants_json(request) is expected


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_browser_credentials_become_the_rest_form() -> None:
    # a person types "300:0.NA/88.166" as the user name: the REST API wants "300%3A..."
    assert browser_basic(basic("300:0.NA/88.166:pa:ss")) == basic("300%3A0.NA/88.166:pa:ss")
    already = basic("300%3A0.NA/88.166:secret")
    assert browser_basic(already) == already
    assert browser_basic("Bearer abc") == "Bearer abc"
    assert browser_basic("Basic !!!") == "Basic !!!"  # left for the REST API to refuse


def test_handle_paths() -> None:
    assert parse_handle("88.166/A%20B") == "88.166/A B"
    assert parse_handle("88.166%2FX") == "88.166/X"
    for bad in ("no-slash", "88.166/..", "88.166/%FF"):
        with pytest.raises(ValueError):
            parse_handle(bad)
    assert handle_url("88.166/A B?", noredirect=True) == "/88.166/A%20B%3F?noredirect"


def test_values_as_people_read_them() -> None:
    admin = data_view(
        "HS_ADMIN",
        encode_admin(
            AdminRecord(AdminPermission.ADD_VALUE | AdminPermission.ADD_HANDLE, "0.NA/88", 300)
        ),
    )
    assert (admin.kind, admin.admin_handle, admin.admin_index) == ("admin", "0.NA/88", 300)
    assert admin.permissions == ("ADD_HANDLE", "ADD_VALUE")
    binary = data_view("BLOB", bytes(range(100)))
    assert binary.kind == "binary" and binary.size == 100 and binary.text.startswith("00 01 02")
    assert binary.text.endswith("…")
    assert data_view("URL", b"javascript:alert(1)").kind == "text"  # never a link
    assert data_view("URL", b"https://example.cn/").kind == "link"


def test_redirect_and_alias_targets() -> None:
    values = [
        HandleValue(3, "URL", b"https://example.cn/3"),
        HandleValue(2, "URL", b"javascript:alert(1)"),
        HandleValue(5, "HS_ALIAS", b"88.166/OTHER"),
    ]
    assert redirect_url(values) == "https://example.cn/3"
    assert alias_target(values) == "88.166/OTHER"
    assert redirect_url([HandleValue(1, "EMAIL", b"a@b")]) is None


def test_templates_compile_and_static_files_load() -> None:
    env = environment()
    for name in env.list_templates():
        env.get_template(name)  # a syntax error fails here, not in front of a reader
    assert {"idnode.css", "favicon.svg"} <= set(load_static())


def test_sign_in_returns_only_to_the_console_or_the_dashboard() -> None:
    from idnode.resolver.web.signin import safe_next

    assert safe_next("/dashboard") == "/dashboard"
    assert safe_next("/console/prefixes/88.166?after=x") == "/console/prefixes/88.166?after=x"
    for elsewhere in ("https://evil.example/", "//evil.example/console", "/api/handles", "/"):
        assert safe_next(elsewhere) == "/console"
    assert safe_next("/console\\@evil.example") == "/console"


def test_a_console_save_keeps_a_stored_value_s_permissions_ttl_and_references() -> None:
    """Editing one field of the console form never makes another value public: a value
    already stored at a field's index keeps its permissions, TTL and references; a new
    value gets the defaults."""
    from idnode.registry.templates import Item, Template
    from idnode.resolver.codec import Permission, ValueReference
    from idnode.resolver.web import console_forms

    template = Template(
        "88.166",
        "v1",
        items=(
            Item("model", 2001),
            Item("pressureMPa", 2002, type="number"),
            Item("madeOn", 2003, type="date"),
        ),
    )
    restricted = int(Permission.ADMIN_READ | Permission.ADMIN_WRITE | Permission.PUBLIC_WRITE)
    stored = [
        HandleValue(1, "URL", b"https://example.cn/1"),
        HandleValue(1001, "TEMPLATE", b"v1", ttl=600, permissions=restricted),
        HandleValue(2001, "model", b"X-1", timestamp=1_700_000_000),
        HandleValue(
            2002,
            "pressureMPa",
            b"1.5",
            ttl=60,
            ttl_type=1,
            timestamp=1_700_000_000,
            permissions=restricted,
            references=(ValueReference("88.166/REF", 300),),
        ),
    ]
    form = console_forms.build(template, stored)
    typed = {"v2001": "X-2", "v2002": "1.5", "v2003": "2024-05-01"}
    out = {v.index: v for v in console_forms.values_of(form, typed)}
    assert set(out) == {1, 1001, 2001, 2002, 2003}
    kept = out[2002]
    assert (kept.permissions, kept.ttl, kept.ttl_type, kept.references) == (
        restricted,
        60,
        1,
        (ValueReference("88.166/REF", 300),),
    )
    assert not kept.public_read and kept.data == b"1.5"
    assert out[1001].permissions == restricted and out[1001].ttl == 600
    assert out[2001].data == b"X-2" and out[2001].timestamp == 0  # the registry stamps it
    new = out[2003]
    assert new.public_read and new.references == () and new.data == b"2024-05-01"
    assert out[1] == stored[0]
