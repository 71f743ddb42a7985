"""The installed bnn's version, for ``bnn --version`` and the records runs leave behind."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str:
    """The version of the installed ``bnn-torch`` distribution (``"unknown"`` when run from a
    source tree that is not installed)."""
    try:
        return version("bnn-torch")
    except PackageNotFoundError:
        return "unknown"
