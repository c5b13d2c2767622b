"""Upstream resolution: finding and asking the server responsible for any handle, from a
root site down the hierarchy (top-level node -> secondary nodes -> enterprise nodes).

``root_info`` reads and writes the root site file; ``exchange`` sends one request over
UDP or TCP without blocking the event loop; ``walker`` follows prefix handles, HS_SITE and
HS_SERV values and referrals to an answer.
"""
