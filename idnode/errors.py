"""One error hierarchy for idnode: every error the node raises on purpose is an
``IdnodeError``, so a caller that wants "anything idnode refused" needs one ``except``.
This module imports nothing, so every layer (the codec included) may derive from it.

    IdnodeError
    ├── ProtocolError        bytes that are not the Handle protocol (resolver.codec.errors)
    ├── ConfigError          settings that cannot be used (resolver.settings)
    ├── ClientError          an upstream server that does not answer usably (resolver.client)
    ├── ProtoError           the gRPC code cannot be generated (resolver.grpc_protos)
    ├── RequestRefused       a request refused with a Handle response code
    │   ├── Refusal          a write refused (registry.store)
    │   └── SessionRefusal   a request the session rules refuse (resolver.handle_sessions)
    └── RegistryError        the registry cannot do what was asked
        ├── StoreError       the database cannot be reached or refused (registry.store)
        ├── InvalidName      a handle or prefix that is not well formed (registry.names)
        ├── TemplateError    a template document that cannot be accepted (registry.templates)
        ├── AuthError        an answer that does not prove the key (registry.auth)
        │   └── AuthBusy     too many costly answers being checked: try again
        ├── SecretError      a sealed secret that cannot be opened (registry.sealing)
        ├── ServerKeyError   the server key cannot be read or used (registry.server_key)
        ├── SessionCryptoError  a session key or ciphertext that cannot be used
        └── SessionLimit     too many sessions or challenges pending (registry.sessions)

Several also derive from the built-in they refine (ValueError, RuntimeError), so code
that catches those keeps working.
"""

from __future__ import annotations


class IdnodeError(Exception):
    """Base of every error idnode raises on purpose."""


class RequestRefused(IdnodeError):
    """A request refused with a Handle response code ``rc`` and a message for the client."""

    def __init__(self, rc: int, message: str) -> None:
        super().__init__(message)
        self.rc = rc
        self.message = message


class RegistryError(IdnodeError):
    """The registry cannot do what was asked (its subclasses say why)."""
