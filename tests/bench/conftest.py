"""AppTest runs a page with its folder first on sys.path, where pages/kernels.py would shadow
the PyPI ``kernels`` package that transformers imports: import it first so later imports find
the real one in sys.modules."""

import contextlib

with contextlib.suppress(ImportError):
    import kernels  # noqa: F401
