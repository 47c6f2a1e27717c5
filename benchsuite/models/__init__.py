"""Architecture families and their probe points."""

from benchsuite.models.registry import (
    Family, ProbePoint, create_model, get_family, list_families, probe_points, register_family,
)

__all__ = ["Family", "ProbePoint", "create_model", "get_family", "list_families", "probe_points", "register_family"]
