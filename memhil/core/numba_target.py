"""The CPU target of memhil's compiled (numba) kernels: full-width vectors on AVX-512.

LLVM tunes every AVX-512 CPU model it knows to prefer 256-bit vectors (``prefer-256-bit``:
on the first AVX-512 parts a 512-bit instruction lowered the core's clock), so numba's
loops use half the register width the CPU has. The kernels here are long elementwise
loops that vectorize fully (Philox draws, Box-Muller, converters, device trains), and
torch's own matrix products already run 512-bit instructions on the same cores, so the
clock is taken either way: measured on a Sapphire Rapids core, the read path's compiled
normals took 1.6-1.7 ns each with 512-bit vectors against 2.9 ns with 256-bit ones.

:func:`prefer_full_vector_width` sets numba's target to the host CPU and its own features
without that tuning flag. It changes nothing where the CPU has no AVX-512, where the user
chose a target (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``), or once numba has compiled
for the CPU in this process (its code generator is then fixed; the kernels stay correct,
only narrower). Each kernel module calls it before its first ``@njit``. numba's on-disk
cache keys code by CPU name and features, so the two targets never share cached code.
"""

from __future__ import annotations

import platform

#: The LLVM tuning feature that narrows vectors on AVX-512 CPUs.
PREFER_256 = "prefer-256-bit"


def prefer_full_vector_width() -> bool:
    """Point numba at the host CPU with 512-bit vectors preferred, where it has AVX-512.
    Returns whether the target is now set so (also True when an earlier call set it)."""
    import os

    from numba.core import config

    settings = vars(config)  # set by numba at import from NUMBA_* variables (and read there)
    if f"-{PREFER_256}" in (settings.get("CPU_FEATURES") or ""):
        return True
    if "NUMBA_CPU_NAME" in os.environ or "NUMBA_CPU_FEATURES" in os.environ:
        return False  # the user's choice
    if platform.machine().lower() not in ("x86_64", "amd64") or _cpu_codegen_started():
        return False
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx512f", False):
        return False
    settings["CPU_NAME"] = llvm.get_host_cpu_name()
    settings["CPU_FEATURES"] = f"{features.flatten()},-{PREFER_256}"
    return True


def _cpu_codegen_started() -> bool:
    """Whether numba's CPU code generator exists already (it reads the target once)."""
    import sys

    registry = sys.modules.get("numba.core.registry")
    target = getattr(registry, "cpu_target", None) if registry is not None else None
    # the context (and its code generator) is a cached property, made on first use
    return target is not None and "_toplevel_target_context" in vars(target)
