"""Activation analysis: level of detail, outlier statistics, run comparison, Kronecker view.

Everything here is a pure function of tensors (no UI, no workspace), except ``render`` and
``cli`` which read tensors through ``studio_backend.dumps.query``.
"""
