"""holynb's version, from the installed package's metadata (written only in pyproject.toml).

A leaf of its own so that low modules (the transport's user-agent, the command line) can name the
version without importing the ``holynb`` package above them.
"""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """The installed holynb's version, or ``"0+unknown"`` from a source tree never installed."""
    from importlib.metadata import PackageNotFoundError, version as installed_version

    try:
        return installed_version("holynb")
    except PackageNotFoundError:
        return "0+unknown"
