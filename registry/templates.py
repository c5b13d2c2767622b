"""Industry metadata templates (数据模板): which values an identifier carries.

A template belongs to a prefix and has a version, an industry code (GB/T 4754, e.g.
A/01/011/0111), a description and items. An item: display name, key (its value type,
``idType``), value index (≥ 2000), required, enabled, and a data type with limits:
string (min/max length), number (min/max), date (ISO 8601, YYYY-MM-DD).

An identifier names its template in the value at index 1001 (type TEMPLATE, data = the
template version). Its values at indexes ≥ 2000 must then be items of that template,
with the item's type and data within limits, and every enabled required item present.
Items are never deleted, only disabled: a new version must keep every item of the
version before it.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from idnode.errors import RegistryError
from idnode.resolver.codec import HandleValue

TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "TEMPLATE"
FIRST_ITEM_INDEX = 2000
DATA_TYPES = ("string", "number", "date")
_INDUSTRY = re.compile(r"^[A-T](/\d{2}(/\d{3}(/\d{4})?)?)?$")


class TemplateError(RegistryError, ValueError):
    """A template document that cannot be accepted; the message says what to fix."""


@dataclass(frozen=True)
class Item:
    key: str
    index: int
    name: str = ""
    type: str = "string"
    required: bool = False
    enabled: bool = True
    min_length: int | None = None
    max_length: int | None = None
    min: str | None = None  # numbers kept as decimal strings: exact, JSON-safe
    max: str | None = None


@dataclass(frozen=True)
class Template:
    prefix: str
    version: str
    industry: str = ""
    description: str = ""
    items: tuple[Item, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Template:
        return parse_template(json.loads(text))

    def check(self, values: tuple[HandleValue, ...] | list[HandleValue]) -> list[str]:
        """Every way ``values`` break this template, one message per field (empty: fine)."""
        errors: list[str] = []
        items = {i.index: i for i in self.items}
        present = {v.index: v for v in values}
        for v in values:
            if v.index < FIRST_ITEM_INDEX:
                continue
            item = items.get(v.index)
            if item is None:
                errors.append(f"index {v.index}: not an item of template {self.version}")
                continue
            if not item.enabled:
                errors.append(f"{item.key} (index {v.index}): disabled in template {self.version}")
                continue
            if v.type != item.key:
                errors.append(f"index {v.index}: type must be {item.key!r}, not {v.type!r}")
                continue
            errors += _check_data(item, v.data)
        for item in self.items:
            if item.enabled and item.required and item.index not in present:
                errors.append(f"{item.key} (index {item.index}): required")
        return errors


def _check_data(item: Item, data: bytes) -> list[str]:
    where = f"{item.key} (index {item.index})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [f"{where}: not UTF-8 text"]
    if item.type == "string":
        if item.min_length is not None and len(text) < item.min_length:
            return [f"{where}: at least {item.min_length} characters"]
        if item.max_length is not None and len(text) > item.max_length:
            return [f"{where}: at most {item.max_length} characters"]
    elif item.type == "number":
        try:
            n = Decimal(text)
            if not n.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            return [f"{where}: {text!r} is not a number"]
        if item.min is not None and n < Decimal(item.min):
            return [f"{where}: at least {item.min}"]
        if item.max is not None and n > Decimal(item.max):
            return [f"{where}: at most {item.max}"]
    elif item.type == "date":
        try:
            datetime.date.fromisoformat(text)
        except ValueError:
            return [f"{where}: {text!r} is not a date (YYYY-MM-DD)"]
    return []


def parse_template(doc: Any) -> Template:
    """A template from its JSON form, checked field by field."""
    if not isinstance(doc, dict):
        raise TemplateError("a template is a JSON object")
    unknown = set(doc) - {"prefix", "version", "industry", "description", "items"}
    if unknown:
        raise TemplateError(f"unknown template fields: {', '.join(sorted(unknown))}")
    prefix, version = doc.get("prefix"), doc.get("version")
    if not isinstance(prefix, str) or not prefix:
        raise TemplateError('"prefix" is required')
    if not isinstance(version, str) or not version or len(version) > 64 or "/" in version:
        raise TemplateError('"version" is required: at most 64 characters, no "/"')
    industry = doc.get("industry", "")
    if industry and (not isinstance(industry, str) or not _INDUSTRY.match(industry)):
        raise TemplateError(f"industry {industry!r} is not a GB/T 4754 code like A/01/011/0111")
    raw_items = doc.get("items", [])
    if not isinstance(raw_items, list) or not raw_items:
        raise TemplateError('"items" must be a non-empty list')
    items: list[Item] = []
    for n, it in enumerate(raw_items, 1):
        if not isinstance(it, dict):
            raise TemplateError(f"item {n}: must be an object")
        bad = set(it) - set(Item.__dataclass_fields__)
        if bad:
            raise TemplateError(f"item {n}: unknown fields {', '.join(sorted(bad))}")
        try:
            item = Item(**it)
        except TypeError as exc:
            raise TemplateError(f"item {n}: {exc}") from None
        if not isinstance(item.key, str) or not item.key:
            raise TemplateError(f"item {n}: key is required")
        if not isinstance(item.index, int) or item.index < FIRST_ITEM_INDEX:
            raise TemplateError(f"item {n} ({item.key}): index must be ≥ {FIRST_ITEM_INDEX}")
        if item.type not in DATA_TYPES:
            raise TemplateError(f"item {n} ({item.key}): type must be one of {DATA_TYPES}")
        for lim in ("min", "max"):
            v = getattr(item, lim)
            if v is not None:
                try:
                    Decimal(str(v))
                except InvalidOperation:
                    raise TemplateError(f"item {n} ({item.key}): {lim} is not a number") from None
        items.append(item)
    indexes = [i.index for i in items]
    keys = [i.key for i in items]
    if len(set(indexes)) != len(indexes) or len(set(keys)) != len(keys):
        raise TemplateError("item indexes and keys must be unique")
    return Template(prefix, version, industry, str(doc.get("description", "")), tuple(items))


def check_successor(old: Template, new: Template) -> None:
    """Items are never deleted: every item of ``old`` must be in ``new`` at the same index."""
    new_items = {i.key: i for i in new.items}
    for item in old.items:
        kept = new_items.get(item.key)
        if kept is None:
            raise TemplateError(
                f"item {item.key} of version {old.version} is missing: items are disabled "
                '("enabled": false), never deleted'
            )
        if kept.index != item.index:
            raise TemplateError(f"item {item.key} moved from index {item.index} to {kept.index}")
