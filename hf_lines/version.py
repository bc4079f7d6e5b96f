"""The installed version, in a module of its own: records and cards need it without importing the whole package."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hf-lines")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+local"
