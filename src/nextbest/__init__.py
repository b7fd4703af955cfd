"""nextbest: next-best-action decisioning for customer journeys."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nextbest")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
