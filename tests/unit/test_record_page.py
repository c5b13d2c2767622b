"""The resolution pages' HTML, byte for byte, in both languages.

The pages are rendered in-process through the same functions the HTTP handler uses
(``WebPages._answer`` for a record, ``WebPages.message``, ``WebPages.page``), for a fixed
set of records that reaches every branch of record.html: every kind of value, a
non-public value, an absolute TTL, an alias chain, ``?auth``, ``?index``/``?type``, no
values, and data an enterprise could write to attack a reader (markup, quotes, a
``javascript:`` URL). The expected pages were captured from the renderer before its
translations were resolved per language ahead of rendering (issue 17): a change in
what a page shows fails here, with the difference.

A deliberate change of a page rewrites the files with ``IDNODE_WRITE_GOLDEN=1`` (read
the diff before committing it). The escaping of hostile values is asserted on its own
as well, so a rewritten golden file cannot hide it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from jinja2 import nodes
from markupsafe import escape

from idnode.resolver.codec import HandleValue, ResponseCode
from idnode.resolver.codec.jsonform import values_from_json
from idnode.resolver.codec.values import encode_values
from idnode.resolver.stages.stage import Resolution
from idnode.resolver.web.assets import LANGUAGE_SEP, environment
from idnode.resolver.web.i18n import LANGUAGES, Translator
from idnode.resolver.web.pages import WebPages

GOLDEN = Path(__file__).parent / "pages_golden"
WRITE = os.environ.get("IDNODE_WRITE_GOLDEN") == "1"
T0 = "2023-11-14T22:13:20Z"  # 1_700_000_000
HOSTILE = "<script>alert(\"x\")</script> & 'q' </td></tr>"


def text(index: int, vtype: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "type": vtype,
        "data": {"format": "string", "value": value},
        "timestamp": T0,
        **extra,
    }


def typed(index: int, vtype: str, fmt: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "index": index,
        "type": vtype,
        "data": {"format": fmt, "value": value},
        "timestamp": T0,
        **extra,
    }


SITE = {
    "serialNumber": 7,
    "servers": [
        {
            "serverId": 1,
            "address": "127.0.0.9",
            "interfaces": [
                {"query": True, "admin": True, "protocol": "TCP", "port": 2641},
                {"query": True, "admin": False, "protocol": "UDP", "port": 2641},
            ],
        }
    ],
}

# The load test's typical record (loadtest/keyspace.py) and an HS_ADMIN.
TYPICAL = values_from_json(
    [
        text(1, "URL", "https://pim.example.cn/12345"),
        text(1001, "TEMPLATE", "tpl-v1"),
        text(2001, "productName", "液压阀 HV-200"),
        typed(100, "HS_ADMIN", "admin", {"handle": "0.NA/88.166", "index": 300}),
    ]
)

# Every kind of value and every branch of the table, with hostile data among them.
EVERYTHING = values_from_json(
    [
        text(1, "URL", "https://example.cn/p?a=1&b=<2>"),
        text(2, "URL", "javascript:alert(1)"),
        text(3, "productName", HOSTILE),
        text(4, '"><img src=x onerror=alert(1)>', "type is hostile"),
        text(5, "SECRET", "only-for-admins", permissions="1100"),
        text(6, "EXPIRES", "at a time", ttl="2030-01-02T03:04:05Z"),
        typed(7, "BLOB", "hex", "00" * 70 + "ff3c3e"),
        typed(8, "SMALL", "base64", "AAEC/w=="),
        typed(9, "HS_VLIST", "vlist", [{"handle": "88.166/<A&B>", "index": 1}]),
        typed(10, "HS_SITE", "site", SITE),
        typed(11, "HS_PUBKEY", "key", {"kty": "RSA", "n": "yQ", "e": "AQAB"}),
        typed(
            100,
            "HS_ADMIN",
            "admin",
            {"handle": "0.NA/<88>", "index": 300, "permissions": "011111111111"},
        ),
        typed(101, "HS_ADMIN", "admin", {"handle": "0.NA/88", "index": 1, "permissions": "0" * 12}),
        text(12, "ZERO-TTL", "", ttl=0),
    ]
)


def pages() -> Any:
    # Only rendering is exercised: the core, the registry and the REST API are not used.
    return WebPages(None, None, None)  # type: ignore[arg-type]


def mocked(path: str) -> web.Request:
    return make_mocked_request("GET", path)


def record(
    lang: str,
    values: tuple[HandleValue, ...],
    chain: list[str],
    *,
    indexes: tuple[int, ...] = (),
    types: tuple[str, ...] = (),
    who: str = "",
    rc: int = ResponseCode.SUCCESS,
) -> web.StreamResponse:
    class Who:  # an Identity as the page shows it: its str()
        def __str__(self) -> str:
            return who

    res = Resolution(rc, encode_values(values) if rc == ResponseCode.SUCCESS else b"")
    return pages()._answer(  # type: ignore[no-any-return]
        mocked(f"/{chain[0]}?noredirect&lang={lang}"),
        chain,
        res,
        indexes,
        types,
        Who() if who else None,
        True,
    )


CASES: dict[str, Callable[[str], web.StreamResponse]] = {
    "typical": lambda lang: record(lang, TYPICAL, ["88.166/ID.12345"]),
    "everything": lambda lang: record(
        lang,
        EVERYTHING,
        ["88.166/<b>A&amp;", "88.166/B\"'", "88.166/ID.1"],
        who="300:0.NA/<88>",
    ),
    "filtered": lambda lang: record(
        lang, TYPICAL[:2], ["88.166/F<1>"], indexes=(1, 1001), types=("URL", "<x>")
    ),
    "no_values": lambda lang: record(
        lang, (), ["88.166/EMPTY"], types=("NOSUCH",), rc=ResponseCode.VALUES_NOT_FOUND
    ),
    "not_found": lambda lang: pages().message(
        mocked(f"/88.166/<x>?lang={lang}"),
        404,
        "not_found_title",
        "not_found_text",
        handle="88.166/<x>",
    ),
    "alias_loop": lambda lang: pages().message(
        mocked(f"/88.166/A?lang={lang}"),
        508,
        "alias_loop_title",
        "alias_loop_text",
        fields={"chain": "88.166/A → 88.166/<B> → 88.166/A"},
    ),
    "referral": lambda lang: pages().message(
        mocked(f"/88.166.1001/X?lang={lang}"),
        300,
        "not_homed_title",
        "not_homed_text",
        handle="88.166.1001/X",
        detail="Referral to <0.NA/88.166.1001>",
        referral="0.NA/88.166.1001",
        servers=["#1 127.0.0.9 TCP/2641", "<li>"],
    ),
    "home": lambda lang: pages().page(
        mocked(f"/?q=x&mode=value&lang={lang}"),
        "home.html",
        query='"><script>',
        noredirect=True,
        by_value=True,
        search_enabled=True,
        results=["88.166/A", "88.166/<B>"],
        problem="",
    ),
}


def html(case: str, lang: str) -> str:
    response = CASES[case](lang)
    assert isinstance(response, web.Response) and response.text is not None
    # the static files' content hashes change with the CSS, not with the renderer
    return re.sub(r"\?v=[0-9a-f]{16}", "?v=HASH", response.text)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_pages_are_unchanged(case: str, lang: str) -> None:
    got = html(case, lang)
    path = GOLDEN / f"{case}.{lang}.html"
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    want = path.read_text(encoding="utf-8")
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(), got.splitlines(), str(path), "rendered", lineterm=""
        )
        pytest.fail("the page changed:\n" + "\n".join(diff), pytrace=False)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_hostile_values_are_escaped(lang: str) -> None:
    page = html("everything", lang)
    assert "<script>" not in page and "<img" not in page and "<88>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;q&#39; &lt;/td&gt;" in page
    assert 'data-type="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page
    assert "88.166/&lt;b&gt;A&amp;amp;" in page  # a handle in the alias chain
    assert "0.NA/&lt;88&gt;" in page  # an HS_ADMIN's handle and the administrator's name
    assert "88.166/&lt;A&amp;B&gt;" in page  # an HS_VLIST member
    assert 'href="https://example.cn/p?a=1&amp;b=&lt;2&gt;"' in page
    assert 'href="javascript' not in page  # a script URL is text, never a link
    assert '<span class="text">javascript:alert(1)</span>' in page
    home = html("home", lang)
    assert 'value="&#34;&gt;&lt;script&gt;"' in home and "88.166/&lt;B&gt;" in home
    message = html("referral", lang)
    assert "<li>&lt;li&gt;</li>" in message and "&lt;0.NA/88.166.1001&gt;" in message


def _words_resolved(tree: nodes.Template, lang: str) -> nodes.Template:
    """``tree`` with each ``{{ t("key") }}`` replaced by its escaped words, as
    assets.ConstantWords is meant to compile it for ``lang``."""
    t = Translator(lang)
    for output in tree.find_all(nodes.Output):
        output.nodes = [
            nodes.TemplateData(str(escape(t(n.args[0].value))))
            if isinstance(n, nodes.Call)
            and isinstance(n.node, nodes.Name)
            and n.node.name == "t"
            and len(n.args) == 1
            and isinstance(n.args[0], nodes.Const)
            and isinstance(n.args[0].value, str)
            and not (n.kwargs or n.dyn_args or n.dyn_kwargs)
            else n
            for n in output.nodes
        ]
    return tree


def test_words_compiled_in_are_the_words_a_page_would_show() -> None:
    """Every template, in each language, is its source with each constant ``t("key")``
    replaced by the escaped words, and nothing else changed; that is what rendering
    would show only while ``t`` is the translator and output is escaped: no template
    rebinds ``t`` or turns autoescaping off."""
    env = environment()
    for name in env.list_templates():
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
        plain = env.parse(source, name)
        for node in plain.find_all(nodes.Name):
            assert node.name != "t" or node.ctx == "load", f"{name} rebinds t"
        for imp in plain.find_all(nodes.Import):
            assert imp.target != "t", name
        for names in plain.find_all(nodes.FromImport):
            assert all("t" not in (n if isinstance(n, tuple) else (n,)) for n in names.names)
        assert not list(plain.find_all(nodes.EvalContextModifier)), f"{name}: autoescape block"
        for lang in LANGUAGES:
            compiled_name = f"{lang}{LANGUAGE_SEP}{name}"
            assert env.autoescape(compiled_name) is True  # type: ignore[operator]
            compiled = env.parse(source, compiled_name)
            assert compiled == _words_resolved(env.parse(source, name), lang), compiled_name
            env.get_template(compiled_name)  # compiles, with its includes in its language
            assert env.join_path("base.html", compiled_name) == f"{lang}{LANGUAGE_SEP}base.html"
