"""Pictures of what a network computes: its graph (DOT), feature maps and filters (PNG grids)."""
from .feature_maps import feature_maps, filters, grid_layout, tile_grid  # noqa: F401
from .graph import graph  # noqa: F401

__all__ = ["graph", "feature_maps", "filters", "grid_layout", "tile_grid"]
