"""The .proto files of the gRPC API, shipped with the package as data (``idnode.protos``)."""
