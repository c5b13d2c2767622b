"""The identifier form of the console, made from a prefix's metadata template
(registry/templates.py): one input per enabled item (text, number with its limits, date),
required items marked, and the template's errors put back next to the field they name.

The form edits only the template's items (indexes ≥ 2000) and the TEMPLATE value at
1001; every other value of the handle (HS_ADMIN, URL, ...) is kept as it is. A field
edits only a value's data: a value already stored at that index keeps its permissions,
TTL and references (a restricted value stays restricted); only new values get defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from idnode.registry.templates import FIRST_ITEM_INDEX, TEMPLATE_INDEX, TEMPLATE_TYPE, Template

from ..codec import HandleValue

# A template error names its field as "key (index 2001): ..." or "index 2001: ...".
_FIELD = re.compile(r"\(index (\d+)\)|^index (\d+)")


@dataclass(frozen=True)
class Field:
    index: int
    key: str
    label: str
    kind: str  # string, number, date
    required: bool
    value: str
    min_length: int | None = None
    max_length: int | None = None
    min: str | None = None
    max: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def input_type(self) -> str:
        return {"number": "number", "date": "date"}.get(self.kind, "text")

    @property
    def name(self) -> str:
        return f"v{self.index}"


@dataclass(frozen=True)
class Form:
    template: Template | None
    fields: tuple[Field, ...]
    errors: tuple[str, ...] = ()  # errors that name no field of the form
    kept: tuple[HandleValue, ...] = field(default_factory=tuple)  # values the form keeps
    # the values stored now at the indexes the form writes: what a field's new data
    # replaces, keeping everything else of that value
    stored: Mapping[int, HandleValue] = field(default_factory=dict)


def current_template(values: list[HandleValue], templates: dict[str, Template]) -> Template | None:
    """The template a handle names (index 1001), else the prefix's newest version."""
    named = next((v for v in values if v.index == TEMPLATE_INDEX), None)
    if named is not None:
        t = templates.get(named.data.decode("utf-8", "replace"))
        if t is not None:
            return t
    return list(templates.values())[-1] if templates else None


def build(
    template: Template | None,
    values: list[HandleValue],
    typed: Mapping[str, str] | None = None,
    errors: list[str] | None = None,
) -> Form:
    """The form for ``values`` under ``template``: what was ``typed`` (a refused submit)
    wins over the stored values; ``errors`` are placed next to their fields."""
    by_index = {v.index: v for v in values}
    placed: dict[int, list[str]] = {}
    loose: list[str] = []
    for e in errors or []:
        m = _FIELD.search(e)
        if m is None:
            loose.append(e)
        else:
            placed.setdefault(int(m.group(1) or m.group(2)), []).append(e)
    fields = []
    shown: set[int] = set()
    for item in template.items if template is not None else ():
        if not item.enabled:
            continue
        stored = by_index.get(item.index)
        value = stored.data.decode("utf-8", "replace") if stored is not None else ""
        if typed is not None:
            value = typed.get(f"v{item.index}", "")
        fields.append(
            Field(
                item.index,
                item.key,
                item.name or item.key,
                item.type,
                item.required,
                value,
                item.min_length,
                item.max_length,
                item.min,
                item.max,
                tuple(placed.get(item.index, ())),
            )
        )
        shown.add(item.index)
    loose += [e for i, es in placed.items() if i not in shown for e in es]
    kept = tuple(
        v
        for v in values
        if v.index != TEMPLATE_INDEX and not (v.index >= FIRST_ITEM_INDEX and v.index in shown)
    )
    edited = {i: v for i, v in by_index.items() if i == TEMPLATE_INDEX or v not in kept}
    return Form(template, tuple(fields), tuple(loose), kept, edited)


def values_of(form: Form, typed: Mapping[str, str]) -> tuple[HandleValue, ...]:
    """The handle's new value list: the kept values, the TEMPLATE value, and one value per
    filled field (an empty optional field is left out; an empty required one is left
    out too, and the template says it is required)."""
    out = list(form.kept)
    if form.template is not None:
        out.append(_value(form, TEMPLATE_INDEX, TEMPLATE_TYPE, form.template.version))
    for f in form.fields:
        text = typed.get(f.name, "").strip()
        if text:
            out.append(_value(form, f.index, f.key, text))
    return tuple(sorted(out, key=lambda v: v.index))


def _value(form: Form, index: int, key: str, text: str) -> HandleValue:
    """The value at ``index`` with this data: the stored one's permissions, TTL and
    references kept (its timestamp is the registry's to set), else a new value."""
    data = text.encode("utf-8")
    before = form.stored.get(index)
    if before is None:
        return HandleValue(index, key, data)
    return replace(before, type=key, data=data, timestamp=0)


def split_errors(message: str) -> list[str]:
    """A registry refusal's message, one error per field (check_values joins with "; ")."""
    return [part.strip() for part in message.split("; ") if part.strip()]
