"""idnode: an industrial internet identifier resolution secondary node (Handle protocol).

One import package over the repository's top-level folders (ARCHITECTURE.md):

- ``idnode.resolver`` (``resolver/``): the read path: the Handle codec, the resolver core
  and its cache stages, the front doors, the node process and the command line;
- ``idnode.registry`` (``registry/``): the write path and system of record;
- ``idnode.loadtest`` (``loadtest/``): the load-test harness;
- ``idnode.protos`` (``protos/``): the gRPC API's .proto files, shipped as package data;
  ``idnode.v1`` holds the code generated from them at first use.

In a checkout, ``idnode/resolver`` and its siblings are links to the top-level folders so
that the checkout imports exactly as the installed wheel does (which maps them with
setuptools ``package-dir``).
"""

__version__ = "0.1.0"
