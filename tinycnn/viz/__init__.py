"""Pictures of what a network computes: its graph (DOT), feature maps and filters (PNG grids)."""
from .graph import graph  # noqa: F401
