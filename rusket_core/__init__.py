"""rusket_core: market-basket mining and implicit-feedback recommenders on numba kernels.

Public names are imported lazily so that ``import rusket_core`` stays cheap and a
notebook only pays for the kernels it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # encoding
    "Labels": "rusket_core.encoding",
    "Encoded": "rusket_core.encoding",
    "encode_transactions": "rusket_core.encoding",
    # mining
    "FPGrowth": "rusket_core.mining",
    "association_rules": "rusket_core.mining",
    # factorization
    "ALS": "rusket_core.factorization",
    "BPR": "rusket_core.factorization",
    # hybrid and analytics
    "Recommender": "rusket_core.hybrid",
    "score_potential": "rusket_core.analytics",
    "find_substitutes": "rusket_core.analytics",
    "customer_saturation": "rusket_core.analytics",
    "to_networkx": "rusket_core.viz",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rusket_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
