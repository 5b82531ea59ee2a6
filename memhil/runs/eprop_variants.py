"""e-prop variants on a fresh simulator: the one place an e-prop network is built together
with the backend it runs on (the algorithm itself only sees the Backend contract)."""

from __future__ import annotations

from typing import Any, cast

from memhil.algorithms.eprop.training import (
    VARIANTS,
    EpropConfig,
    EpropNetwork,
    Variant,
    pcm_device,
    required_shape,
    variant_config,
)
from memhil.backends.sim import SimBackend


def build_variant(
    name: str | Variant,
    config: EpropConfig,
    *,
    seed: int = 0,
    device_mode: str | None = None,
    tuned: bool = True,
    **sim: Any,
) -> EpropNetwork:
    """An ``EpropNetwork`` for a named variant on a fresh PCM ``SimBackend`` sized for it
    (one tile per matrix); ``device_mode`` overrides the variant's PCM mode (ablations).
    ``tuned``: apply the variant's own hyperparameters (``Variant.config``, ``response_pulses``)
    over ``config`` (sizes, neuron constants and seed stay the caller's); False runs the
    variant with ``config`` as is. The scheme options ``Variant.params`` always apply."""

    v = VARIANTS[name] if isinstance(name, str) else name
    if tuned:
        config = variant_config(v, config)
    tiles, rows, cols = required_shape(config.n_in, config.n_rec, config.n_out, v.n_devices)
    backend = SimBackend(
        {
            "tiles": tiles,
            "rows": rows,
            "cols": cols,
            "seed": seed,
            "device": pcm_device(cast(Any, device_mode or v.device)),
            **sim,
        }
    )
    return EpropNetwork(
        backend,
        config,
        v.scheme,
        v.params,
        n_devices=v.n_devices,
        response_pulses=v.response_pulses if tuned else 20,
    )


__all__ = ["build_variant"]
