"""HS_ADMIN data: who may administer a handle, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

from .codes import MAX_HANDLE_LENGTH
from .wire import I32, U16, Reader


@dataclass(frozen=True, slots=True)
class AdminRecord:
    permissions: int  # AdminPermission bits
    admin_handle: str
    admin_index: int


def encode_admin(a: AdminRecord) -> bytes:
    h = a.admin_handle.encode("utf-8")
    return U16.pack(a.permissions) + I32.pack(len(h)) + h + I32.pack(a.admin_index)


def decode_admin(data: bytes) -> AdminRecord:
    r = Reader(data)
    perms = r.u16("HS_ADMIN permissions")
    handle = r.text("HS_ADMIN admin handle", MAX_HANDLE_LENGTH)
    index = r.i32("HS_ADMIN admin index")
    r.expect_end("HS_ADMIN data")
    return AdminRecord(perms, handle, index)


def admin_permissions_to_bits(permissions: int) -> str:
    """The reference JSON form: 12 characters of binary, most significant bit first."""
    return format(permissions & 0x0FFF, "012b")


def admin_permissions_from_bits(bits: str) -> int:
    if len(bits) != 12 or set(bits) - {"0", "1"}:
        raise ValueError(f"admin permissions must be 12 binary digits, got {bits!r}")
    return int(bits, 2)
