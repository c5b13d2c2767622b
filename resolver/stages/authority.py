"""Authority stage: a handle whose prefix is not homed here gets the not-homed answer,
before any shared cache or the registry is asked."""

from __future__ import annotations

from idnode.registry.names import PrefixAuthority

from ..codec import ResponseCode
from ..codec.codes import NOT_HOMED_MESSAGE
from ..l1 import Entry
from .stage import Lookup, Resolution, Stage

NOT_HOMED = Resolution(ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, message=NOT_HOMED_MESSAGE)


class AuthorityStage(Stage):
    def __init__(self, authority: PrefixAuthority) -> None:
        self.authority = authority  # replaced in place when prefixes are homed meanwhile

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        return None if self.authority.serves(q.handle) else NOT_HOMED
