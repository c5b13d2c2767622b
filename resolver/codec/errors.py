"""The codec's single error type."""

from __future__ import annotations

from idnode.errors import IdnodeError


class ProtocolError(IdnodeError, ValueError):
    """Bytes that are not a valid Handle protocol message, or a message that cannot be encoded.

    Every malformed input the codec meets ends here, never in IndexError,
    struct.error or UnicodeDecodeError, so a front door needs one ``except``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
