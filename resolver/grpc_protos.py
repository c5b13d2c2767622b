"""The gRPC modules, generated from protos/ with grpc_tools (never edited by hand, never
committed). Generation runs once per version of the .proto files, into a cache
directory keyed by their hash; that directory joins the path of the package
``idnode.v1``, so the generated modules live inside idnode's namespace (nothing is put
on sys.path, no top-level name is claimed).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

import idnode.protos
import idnode.v1
from idnode.errors import IdnodeError

PROTOS = Path(idnode.protos.__file__).resolve().parent
FILES = ("idnode/v1/handles.proto",)


class ProtoError(IdnodeError, RuntimeError):
    pass


def _cache_dir(digest: str) -> Path:
    base = os.environ.get("IDNODE_PROTO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "idnode"
    )
    try:
        Path(base).mkdir(parents=True, exist_ok=True)
    except OSError:
        base = os.path.join(tempfile.gettempdir(), "idnode-protos")
    return Path(base) / f"grpc-v1-{digest}"


def generate(out: Path) -> None:
    from grpc_tools import protoc

    try:
        import grpc_tools

        include = str(Path(grpc_tools.__file__).parent / "_proto")
    except ImportError as exc:  # pragma: no cover - grpcio-tools is a dependency
        raise ProtoError("grpcio-tools is needed to build the gRPC code") from exc
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".gen-"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={tmp}",
        f"--grpc_python_out={tmp}",
        *(str(PROTOS / f) for f in FILES),
    ]
    if protoc.main(args) != 0:
        raise ProtoError(f"protoc failed on {FILES}")
    try:
        (tmp / "idnode" / "v1").rename(out)  # atomic: several workers may race to generate
    except OSError:
        if not out.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load() -> tuple[ModuleType, ModuleType]:
    """(handles_pb2, handles_pb2_grpc), generating them first if needed."""
    digest = hashlib.sha256(b"".join((PROTOS / f).read_bytes() for f in FILES)).hexdigest()[:16]
    out = _cache_dir(digest)
    if not (out / "handles_pb2_grpc.py").exists():
        generate(out)
    if str(out) not in idnode.v1.__path__:
        idnode.v1.__path__.append(str(out))
    pb2 = importlib.import_module("idnode.v1.handles_pb2")
    pb2_grpc = importlib.import_module("idnode.v1.handles_pb2_grpc")
    return pb2, pb2_grpc
