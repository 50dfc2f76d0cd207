"""Versioned schema migrations: ``NNNN_name.sql`` files applied in numeric order.

Number ranges per capability keep parallel work from colliding:
0001-0099 core, 0100 dumps, 0200 engines/launch, 0300 moe, 0400 kernels/bench,
0500 dsa, 0600 trace.
"""
