"""Numba compilation with an on-disk cache that never breaks a read-only install.

Numba's ``cache=True`` raises at decoration time when it finds no writable
place for the cache (an install in a read-only directory with no
``NUMBA_CACHE_DIR`` and no writable user cache). :func:`jit` requests caching
and, if Numba raises, compiles the function without caching instead.
"""

from __future__ import annotations

import warnings

import numba


def jit(function=None, **options):
    """Compile ``function`` in nopython mode, cached on disk when a cache location is writable."""
    if function is None:
        return lambda inner: jit(inner, **options)
    try:
        return numba.njit(cache=True, **options)(function)
    except (RuntimeError, OSError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return numba.njit(cache=False, **options)(function)
