"""Demo data: the node's prefix, three enterprises and a few identifiers to resolve.

Each enterprise prefix handle names two administrators: the enterprise's own
(``300:0.NA/88.166.100N``, which the demo does not create) and the node's
(``300:0.NA/88.166``, whose secret ``idnode demo`` prints), so the README's write
examples work under the enterprise prefixes with the one secret the demo gives.
"""

from __future__ import annotations

from typing import Any

from idnode.resolver.codec import AdminRecord, HandleValue, encode_admin, encode_values
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS, Permission

from .names import NA_PREFIX
from .store import HandleRecord

NODE_PREFIX = "88.166"
NODE_ADMIN = (NA_PREFIX + NODE_PREFIX, 300)  # made by init with the demo's secret
TEMPLATE_VERSION = "tpl-v1"
TEMPLATE: dict[str, Any] = {
    "prefix": NODE_PREFIX,
    "version": TEMPLATE_VERSION,
    "industry": "C/34",
    "description": "general equipment: the fields every demo identifier carries",
    "items": [
        {
            "key": "productName",
            "index": 2001,
            "name": "产品名称",
            "required": True,
            "max_length": 64,
        },
        {"key": "manufacturer", "index": 2002, "name": "生产企业", "required": True},
        {"key": "costPrice", "index": 2003, "name": "成本价", "type": "number", "min": "0"},
    ],
}
ENTERPRISES = {
    "88.166.1001": ("Chongqing Hydraulics Co.", "HV", "Hydraulic valve HV-200"),
    "88.166.1002": ("Yangtze Motor Works", "MT", "Servo motor MT-7"),
    "88.166.1003": ("Liangjiang Bearings", "BR", "Bearing BR-6204"),
}


def demo_records(timestamp: int) -> list[HandleRecord]:
    out = []
    for prefix, (company, code, product) in ENTERPRISES.items():
        admin = HandleValue(
            100,
            "HS_ADMIN",
            encode_admin(AdminRecord(ALL_ADMIN_PERMISSIONS, f"0.NA/{prefix}", 300)),
            timestamp=timestamp,
        )
        out.append(
            HandleRecord(
                f"0.NA/{prefix}",
                encode_values(
                    [
                        HandleValue(1, "DESC", company.encode(), timestamp=timestamp),
                        admin,
                        HandleValue(
                            101,
                            "HS_ADMIN",
                            encode_admin(AdminRecord(ALL_ADMIN_PERMISSIONS, *NODE_ADMIN)),
                            timestamp=timestamp,
                        ),
                    ]
                ),
            )
        )
        for n in range(1, 5):
            suffix = f"{code}-{n:04d}"
            values = [
                HandleValue(
                    1, "URL", f"https://example.cn/{prefix}/{suffix}".encode(), timestamp=timestamp
                ),
                HandleValue(1001, "TEMPLATE", TEMPLATE_VERSION.encode(), timestamp=timestamp),
                HandleValue(2001, "productName", f"{product} #{n}".encode(), timestamp=timestamp),
                HandleValue(2002, "manufacturer", company.encode(), timestamp=timestamp),
                # not public: shown to nobody until an admin authenticates
                HandleValue(
                    2003,
                    "costPrice",
                    b"1200.00",
                    timestamp=timestamp,
                    permissions=int(Permission.ADMIN_READ | Permission.ADMIN_WRITE),
                ),
                admin,
            ]
            out.append(HandleRecord(f"{prefix}/{suffix}", encode_values(values)))
    return out
