"""AppTest runs a page with its folder first on sys.path, where pages/kernels.py would shadow
the ``kernels`` package: import the package first so the page's lazy imports find it."""

import kernels.experts  # noqa: F401
