"""The compiled kernels' CPU target (memhil/core/numba_target.py): 512-bit vectors where the
CPU has AVX-512, the user's own numba target left alone, and nothing changed once numba's
code generator exists. Each case runs in a fresh interpreter: the target is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import llvmlite.binding as llvm

PROBE = """
import json, sys
{before}
from memhil.core.numba_target import prefer_full_vector_width
from numba.core import config
chosen = prefer_full_vector_width()
from memhil.backends.sim import read_kernels  # a kernel module: compiles under the target
import numpy as np
x = np.ones(64, np.float32)
read_kernels.quantize_in_place(x, np.float32(1), np.float32(7), np.float32(1))
from numba.core.registry import cpu_target
features = cpu_target.target_context.codegen()._tm_features
print(json.dumps({{"chosen": chosen, "config": config.CPU_FEATURES, "codegen": features}}))
"""


def _probe(before: str = "", **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _host_has_avx512() -> bool:
    llvm.initialize_native_target()
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


def test_the_kernels_compile_with_full_width_vectors_exactly_where_the_cpu_has_avx512():
    got = _probe()
    wide = "-prefer-256-bit" in got["codegen"]
    assert got["chosen"] == wide == _host_has_avx512()


def test_a_target_the_user_chose_is_left_alone():
    got = _probe(NUMBA_CPU_FEATURES="")  # numba's spelling of "no extra features"
    assert got["chosen"] is False
    assert "prefer-256-bit" not in got["codegen"]


def test_nothing_changes_once_numba_has_compiled_for_the_cpu():
    # a function compiled first fixes numba's code generator: the target is not touched
    before = "import numba\nnumba.njit(lambda a: a + 1)(1)"
    got = _probe(before)
    assert got["chosen"] is False and got["config"] is None
    assert "prefer-256-bit" not in got["codegen"]
