"""Asset checks guarding what downstream users rely on."""

from __future__ import annotations

import dagster as dg


def all_checks() -> list[dg.AssetChecksDefinition]:
    """Every asset check of the project."""
    return []
