"""costwatch: keeps a Langdock workspace's API spend inside its budgets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("costwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
