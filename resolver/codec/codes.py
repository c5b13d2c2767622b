"""Every code and limit of the Handle protocol, in one home.

Numbers follow RFC 3652 and the deployed clients (../shared/spec/handle-protocol.md §2);
the Chinese IDIS extensions are marked as such.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# RFC 3652's OC_RESERVED: the opcode of an error answer to a request that could not be read.
# Not an OpCode member: no request carries it.
OC_RESERVED = 0


class OpCode(IntEnum):
    RESOLUTION = 1
    GET_SITE_INFO = 2
    CREATE_HANDLE = 100
    DELETE_HANDLE = 101
    ADD_VALUE = 102
    REMOVE_VALUE = 103
    MODIFY_VALUE = 104
    LIST_HANDLES = 105
    LIST_NA = 106  # RFC only; the reference server uses LIST_HOMED_NAS (302)
    CHALLENGE_RESPONSE = 200
    VERIFY_RESPONSE = 201
    HOME_NA = 300
    UNHOME_NA = 301
    LIST_HOMED_NAS = 302
    SESSION_SETUP = 400
    SESSION_TERMINATE = 401
    SESSION_EXCHANGEKEY = 402
    GET_NEXT_TXN_ID = 1000
    RETRIEVE_TXN_LOG = 1001
    DUMP_HANDLES = 1002
    BACKUP_SERVER = 1003
    LOGIN = 2000  # IDIS
    LOGIN_ID_SYSTEM = 2001  # IDIS


class ResponseCode(IntEnum):
    RESERVED = 0  # a request
    SUCCESS = 1
    ERROR = 2
    SERVER_TOO_BUSY = 3
    PROTOCOL_ERROR = 4
    OPERATION_NOT_SUPPORTED = 5
    RECURSION_COUNT_TOO_HIGH = 6
    SERVER_BACKUP = 7
    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102
    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202
    OUT_OF_DATE_SITE_INFO = 300
    SERVER_NOT_RESPONSIBLE_FOR_HANDLE = 301
    SERVICE_REFERRAL = 302
    PREFIX_REFERRAL = 303
    INVALID_ADMIN = 400
    INSUFFICIENT_PERMISSIONS = 401
    AUTHENTICATION_NEEDED = 402
    AUTHENTICATION_FAILED = 403
    INVALID_CREDENTIAL = 404
    AUTHEN_TIMEOUT = 405
    AUTHEN_ERROR = 406
    RELOGIN = 407  # IDIS
    LOGIN_FIRST = 408  # IDIS
    SESSION_TIMEOUT = 500
    SESSION_FAILED = 501
    INVALID_SESSION_KEY = 502
    NEED_RSAKEY_FOR_SESSIONEXCHANGE = 503
    INVALID_SESSIONSETUP_REQUEST = 504
    SESSION_MESSAGE_REJECTED = 505
    CLIENT_CHANNEL_ERROR = 601  # IDIS
    CLIENT_TIME_OUT = 602  # IDIS
    REQUEST_LIMIT_DAILY = 603  # IDIS
    REGISTER_COUNT_LIMIT = 604  # IDIS
    PREFIX_LIMIT = 605  # IDIS
    VERIFY_CREDENTIAL_FAILED = 3001  # IDIS


class OpFlag(IntFlag):
    AT = 0x80000000  # authoritative
    CT = 0x40000000  # certify
    ENC = 0x20000000  # encrypt the response
    REC = 0x10000000  # recursion allowed
    CA = 0x08000000  # cache-certify
    CN = 0x04000000  # continuous: more messages follow
    KC = 0x02000000  # keep the TCP connection open
    PO = 0x01000000  # public only
    RD = 0x00800000  # the response carries the request digest
    OVRW = 0x00400000  # create/add: overwrite when it exists
    MINT = 0x00200000  # create: mint a new suffix
    DNRF = 0x00100000  # do not refer


class KeyExchange(IntEnum):
    """How SESSION_SETUP agrees a session key (the reference's KEY_EXCHANGE_*)."""

    NONE = 0
    CIPHER_CLIENT = 1  # the server encrypts a new key with the client's public key
    CIPHER_SERVER = 2  # the client encrypts a new key with the server's public key
    CIPHER_HDL = 3  # as CIPHER_CLIENT, the client's key read from a handle value
    DH = 4  # Diffie-Hellman


class SessionCipher(IntEnum):
    """Session key algorithms (the reference's HdlSecurityProvider.ENCRYPT_ALG_*)."""

    DES = 1
    DESEDE = 2
    AES = 3


class EnvelopeFlag(IntFlag):
    COMPRESSED = 0x80
    ENCRYPTED = 0x40
    TRUNCATED = 0x20
    # the low two bits carry the suggested major version, not flags


class Permission(IntFlag):
    """Permissions byte of a handle value."""

    PUBLIC_WRITE = 0x01
    PUBLIC_READ = 0x02
    ADMIN_WRITE = 0x04
    ADMIN_READ = 0x08


class AdminPermission(IntFlag):
    """Permission bits of HS_ADMIN data."""

    ADD_HANDLE = 0x0001
    DELETE_HANDLE = 0x0002
    ADD_DERIVED_PREFIX = 0x0004
    DELETE_DERIVED_PREFIX = 0x0008
    MODIFY_VALUE = 0x0010
    REMOVE_VALUE = 0x0020
    ADD_VALUE = 0x0040
    MODIFY_ADMIN = 0x0080
    REMOVE_ADMIN = 0x0100
    ADD_ADMIN = 0x0200
    AUTHORIZED_READ = 0x0400
    LIST_HANDLES = 0x0800


ALL_ADMIN_PERMISSIONS = 0x0FFF


class TtlType(IntEnum):
    RELATIVE = 0
    ABSOLUTE = 1


class HashType(IntEnum):
    """Request digest algorithms; OLD_MD5 is a 4-byte length + MD5 with no type byte."""

    OLD_MD5 = 0
    MD5 = 1
    SHA1 = 2
    SHA256 = 3


class HashOption(IntEnum):
    """Which part of a handle picks the server within a multi-server site."""

    BY_PREFIX = 0
    BY_SUFFIX = 1
    BY_HANDLE = 2


class InterfaceType(IntEnum):
    OUT_OF_SERVICE = 0
    ADMIN = 1
    QUERY = 2
    ADMIN_AND_QUERY = 3


class InterfaceProtocol(IntEnum):
    UDP = 0
    TCP = 1
    HTTP = 2
    HTTPS = 3


# Value types the protocol gives meaning to.
TYPE_ADMIN = "HS_ADMIN"
TYPE_SITE = "HS_SITE"
TYPE_SITE6 = "HS_SITE.6"
TYPE_SITE_PREFIX = "HS_SITE.PREFIX"
TYPE_SERV = "HS_SERV"
TYPE_ALIAS = "HS_ALIAS"
TYPE_VLIST = "HS_VLIST"
TYPE_PUBKEY = "HS_PUBKEY"
TYPE_SECKEY = "HS_SECKEY"
SITE_TYPES = frozenset({TYPE_SITE, TYPE_SITE6, TYPE_SITE_PREFIX})

# Limits. The first three are the reference server's; they bound every
# allocation a hostile message can cause.
MAX_MESSAGE_LENGTH = 262_144
MAX_HANDLE_LENGTH = 2048
MAX_VALUES = 2048
ENVELOPE_SIZE = 20
HEADER_SIZE = 24
UDP_DATAGRAM_SIZE = 512  # including the envelope
UDP_PAYLOAD_SIZE = UDP_DATAGRAM_SIZE - ENVELOPE_SIZE

DEFAULT_TTL = 86_400
DEFAULT_PERMISSIONS = Permission.ADMIN_READ | Permission.ADMIN_WRITE | Permission.PUBLIC_READ
UNKNOWN_SITE_SERIAL = 0xFFFF

# What the reference server says for RC 301; clients show it to people.
NOT_HOMED_MESSAGE = "That naming authority doesn't live here"


def op_name(code: int) -> str:
    try:
        return OpCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def rc_name(code: int) -> str:
    try:
        return ResponseCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def flag_names(op_flags: int) -> list[str]:
    return [f.name for f in OpFlag if f.name and op_flags & f]
