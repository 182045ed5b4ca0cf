"""The one table of association-rule metrics: names, kernel codes derived from them, one formula each.

Every metric is a function of three supports (antecedent ``s_a``, consequent ``s_c``, rule
``s_ac``) with mlxtend's definitions and conventions for the degenerate cases (conviction is inf
at confidence 1; zhangs_metric and certainty are 0 where their denominator is 0). The rules kernel
filters with :func:`metric_value`; rules frames and substitutes fill columns with
:func:`rule_metrics`, which runs the same function over arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

METRICS: tuple[str, ...] = (
    "antecedent support",
    "consequent support",
    "support",
    "confidence",
    "lift",
    "leverage",
    "conviction",
    "zhangs_metric",
    "jaccard",
    "certainty",
    "kulczynski",
)

# kernel codes, derived from the names (numba reads these globals as constants)
ANTECEDENT_SUPPORT = METRICS.index("antecedent support")
CONSEQUENT_SUPPORT = METRICS.index("consequent support")
SUPPORT = METRICS.index("support")
CONFIDENCE = METRICS.index("confidence")
LIFT = METRICS.index("lift")
LEVERAGE = METRICS.index("leverage")
CONVICTION = METRICS.index("conviction")
ZHANG = METRICS.index("zhangs_metric")
JACCARD = METRICS.index("jaccard")
CERTAINTY = METRICS.index("certainty")
KULCZYNSKI = METRICS.index("kulczynski")


def metric_code(metric: str) -> int:
    """Kernel code of ``metric``; ValueError listing the valid names otherwise."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    return METRICS.index(metric)


@njit(cache=True, error_model="numpy")
def metric_value(code, s_ac, s_a, s_c):
    """Metric ``code`` of one rule from its rule, antecedent and consequent supports."""
    if code == ANTECEDENT_SUPPORT:
        return s_a
    if code == CONSEQUENT_SUPPORT:
        return s_c
    if code == SUPPORT:
        return s_ac
    conf = s_ac / s_a
    if code == CONFIDENCE:
        return conf
    if code == LIFT:
        return conf / s_c
    if code == LEVERAGE:
        return s_ac - s_a * s_c
    if code == CONVICTION:
        return (1.0 - s_c) / (1.0 - conf) if conf < 1.0 else np.inf
    if code == ZHANG:
        den = max(s_ac * (1.0 - s_a), s_a * (s_c - s_ac))
        return 0.0 if den == 0.0 else (s_ac - s_a * s_c) / den
    if code == JACCARD:
        return s_ac / (s_a + s_c - s_ac)
    if code == CERTAINTY:
        return 0.0 if 1.0 - s_c == 0.0 else (conf - s_c) / (1.0 - s_c)
    return (conf + s_ac / s_c) / 2.0  # KULCZYNSKI


@njit(cache=True)
def _metric_column(code, s_ac, s_a, s_c, out):
    for r in range(out.shape[0]):
        out[r] = metric_value(code, s_ac[r], s_a[r], s_c[r])


def rule_metrics(
    s_a: np.ndarray, s_c: np.ndarray, s_ac: np.ndarray, names: tuple[str, ...] = METRICS
) -> dict[str, np.ndarray]:
    """The metrics ``names`` (default all, in table order) of rules with these supports, as float64 columns."""
    supports = [np.require(s, np.float64, "CW") for s in (s_ac, s_a, s_c)]
    out = {}
    for name in names:
        column = np.empty(len(supports[0]), dtype=np.float64)
        _metric_column(metric_code(name), *supports, column)
        out[name] = column
    return out
