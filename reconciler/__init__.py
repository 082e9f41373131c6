"""photosync: keep Microsoft Entra ID profile photos in sync with a folder of image files."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("photosync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
