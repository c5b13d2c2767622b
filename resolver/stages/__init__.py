"""The stages of the resolver's lookup chain, one module each.

The interface is in stage.py; the order is one list, where the node builds its core
(resolver/node.py). Today: l1_cache (this worker's memory) -> authority (is the prefix
homed here) -> redis_cache (shared by every worker, optional) -> registry_lookup (SQL).
"""
