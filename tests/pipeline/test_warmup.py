"""Warm-up: it compiles the very signatures the asset graph then uses, so the real run adds none."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rusket_core.warmup import FAMILIES, warm_up
from tests.conftest import ROOT

CHILD = r"""
import json, sys, tempfile
from pathlib import Path
import numba
from numba.core.registry import CPUDispatcher
import rusket_core.analytics, rusket_core.encoding, rusket_core.hybrid.blend, rusket_core.hybrid.carts
import rusket_core.hybrid.rule_index
import rusket_core.factorization.kernels, rusket_core.factorization.topk
import rusket_core.mining.kernels
from rusket_core.warmup import warm_up

MODULES = [rusket_core.analytics, rusket_core.encoding, rusket_core.hybrid.blend, rusket_core.hybrid.carts,
           rusket_core.hybrid.rule_index, rusket_core.factorization.kernels,
           rusket_core.factorization.topk, rusket_core.mining.kernels]

def signatures():
    return {f"{m.__name__}.{name}": sorted(str(s) for s in obj.signatures)
            for m in MODULES for name, obj in vars(m).items() if isinstance(obj, CPUDispatcher)}

warm_up()
before = signatures()
sys.path.insert(0, sys.argv[1])
from tests.pipeline.conftest import build, run
with tempfile.TemporaryDirectory() as tmp:
    result = run(build(Path(tmp)))
print(json.dumps({"before": before, "after": signatures(), "success": result.success}))
"""


def test_the_graph_needs_no_signature_the_warm_up_did_not_compile():
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["success"]
    warmed = {name: sigs for name, sigs in out["before"].items() if sigs}
    for kernel in ("als_update", "als_loss", "bpr_epochs", "parallel_kernel", "_blend_kernel", "_potential_kernel",
                   "_cart_rules_kernel", "_fill_kernel", "rules_kernel"):  # fmt: skip
        assert any(name.endswith("." + kernel) for name in warmed), f"{kernel} not warmed"
    extra = {name: sorted(set(out["after"][name]) - set(sigs)) for name, sigs in warmed.items()}
    assert not {name: sigs for name, sigs in extra.items() if sigs}


def test_families_run_in_order_and_unknown_ones_are_refused():
    assert list(warm_up(["rules", "bpr"])) == ["rules", "bpr"]
    assert set(FAMILIES) >= {"als", "bpr", "top_k", "rules", "recommendations", "analytics"}
    with pytest.raises(ValueError, match="nearest"):
        warm_up(["nearest"])
