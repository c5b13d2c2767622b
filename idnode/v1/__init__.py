"""The gRPC modules of ``protos/idnode/v1``, generated from the .proto files at first use
(``idnode.resolver.grpc_protos``): never edited by hand, never committed. Their directory is
added to this package's path when they are loaded, so that the generated code's own
``from idnode.v1 import handles_pb2`` resolves inside this package.
"""
