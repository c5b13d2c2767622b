"""Metadata templates: the document's rules and the checks of an identifier's values."""

from __future__ import annotations

from typing import Any

import pytest

from idnode.registry.templates import TemplateError, check_successor, parse_template
from idnode.resolver.codec import HandleValue

DOC: dict[str, Any] = {
    "prefix": "88.166.1001",
    "version": "v1",
    "industry": "C/34/344/3443",
    "description": "hydraulic valves",
    "items": [
        {
            "key": "productName",
            "index": 2001,
            "type": "string",
            "required": True,
            "min_length": 2,
            "max_length": 20,
        },
        {"key": "pressureMPa", "index": 2002, "type": "number", "min": "0", "max": "70"},
        {"key": "madeOn", "index": 2003, "type": "date"},
        {"key": "oldCode", "index": 2004, "enabled": False},
    ],
}


def v(index: int, vtype: str, data: str) -> HandleValue:
    return HandleValue(index, vtype, data.encode())


def test_a_good_identifier_passes() -> None:
    t = parse_template(DOC)
    assert (
        t.check(
            [
                v(1, "URL", "x"),
                v(1001, "TEMPLATE", "v1"),
                v(2001, "productName", "HV"),
                v(2002, "pressureMPa", "31.5"),
                v(2003, "madeOn", "2026-11-24"),
            ]
        )
        == []
    )


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([], "productName (index 2001): required"),
        ([v(2001, "productName", "H")], "at least 2 characters"),
        ([v(2001, "productName", "H" * 21)], "at most 20 characters"),
        ([v(2001, "name", "HV")], "type must be 'productName'"),
        ([v(2001, "productName", "HV"), v(2002, "pressureMPa", "high")], "is not a number"),
        ([v(2001, "productName", "HV"), v(2002, "pressureMPa", "71")], "at most 70"),
        ([v(2001, "productName", "HV"), v(2003, "madeOn", "24/11/2026")], "is not a date"),
        ([v(2001, "productName", "HV"), v(2004, "oldCode", "x")], "disabled in template v1"),
        ([v(2001, "productName", "HV"), v(2999, "other", "x")], "not an item of template v1"),
    ],
)
def test_each_broken_field_is_named(values: list[HandleValue], error: str) -> None:
    errors = parse_template(DOC).check(values)
    assert any(error in e for e in errors), errors


def test_every_error_is_reported_at_once() -> None:
    errors = parse_template(DOC).check([v(2002, "pressureMPa", "x"), v(2003, "madeOn", "y")])
    assert len(errors) == 3  # the number, the date and the missing required name


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"version": ""}, "version"),
        ({"industry": "Z/99"}, "GB/T 4754"),
        ({"items": []}, "non-empty"),
        ({"items": [{"key": "a", "index": 1500}]}, "index must be"),
        ({"items": [{"key": "a", "index": 2001, "type": "blob"}]}, "type must be"),
        ({"items": [{"key": "a", "index": 2001}, {"key": "a", "index": 2002}]}, "unique"),
        ({"items": [{"key": "a", "index": 2001, "colour": 1}]}, "unknown fields"),
        ({"extra": 1}, "unknown template fields"),
    ],
)
def test_bad_documents_say_what_to_fix(change: dict[str, Any], error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        parse_template({**DOC, **change})


def test_items_are_never_deleted_only_disabled() -> None:
    v1 = parse_template(DOC)
    dropped = parse_template({**DOC, "version": "v2", "items": DOC["items"][:2]})
    with pytest.raises(TemplateError, match="never deleted"):
        check_successor(v1, dropped)
    items = [dict(i) for i in DOC["items"]]
    items[0]["enabled"] = False
    check_successor(v1, parse_template({**DOC, "version": "v2", "items": items}))
    items[1]["index"] = 2100
    with pytest.raises(TemplateError, match="moved"):
        check_successor(v1, parse_template({**DOC, "version": "v3", "items": items}))
