"""photosync: keep Microsoft Entra ID profile photos in sync with a folder of image files."""

from importlib.metadata import PackageNotFoundError, version

# The name on the package index (pyproject.toml); the command and the package stay `photosync`
# and `reconciler`.
DISTRIBUTION = "entra-photosync"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
