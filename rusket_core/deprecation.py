"""Old keyword names kept working for a while, with a warning naming the new one."""

from __future__ import annotations

import warnings
from typing import Any

_UNSET: Any = object()


def renamed(old: str, old_value: Any, new: str, new_value: Any, default: Any = None) -> Any:
    """The value of keyword ``new``, or of its deprecated name ``old`` (with a DeprecationWarning)."""
    if old_value is _UNSET:
        return new_value
    if new_value is not default:
        raise TypeError(f"give {new}= only ({old}= is its deprecated name)")
    warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=3)
    return old_value


UNSET = _UNSET
