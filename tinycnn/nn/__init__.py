"""tinycnn.nn: modules, functional ops and initialisers."""
from . import functional  # noqa: F401
