"""Protocols by name: ``protocol_names()``, ``build_protocol(name, params)`` -> a plan
factory (callable ``factory(capabilities)`` with ``name`` and ``params``), parameters
from a mapping via ``memhil.core.config.from_mapping`` (errors name the file and key)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memhil.core.config import from_mapping
from memhil.core.errors import ConfigError


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    params_cls: type
    plan: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class ProtocolPlan:
    """A configured protocol: call it with the backend capabilities to get a fresh plan."""

    name: str
    params: Any
    plan: Callable[..., Any]

    def __call__(self, caps: Any):
        return self.plan(self.params, caps)


_REGISTRY: dict[str, ProtocolSpec] = {}


def register(spec: ProtocolSpec) -> None:
    _REGISTRY[spec.name] = spec


def _builtin() -> None:
    if _REGISTRY:
        return
    from memhil.protocols.library import (
        converge,
        forming,
        iv_sweep,
        multi_bias,
        multistate_seeker,
        pulse_train,
        sequence,
        stdp,
        switch_seeker,
        switching,
        timed_reads,
        transients,
        wafer,
    )

    for spec in (
        ProtocolSpec("iv_sweep", iv_sweep.IVSweepParams, iv_sweep.plan, "bipolar staircase I-V"),
        ProtocolSpec(
            "forming", forming.FormingParams, forming.plan, "AutoFormer ramp to a read current"
        ),
        ProtocolSpec(
            "switching", switching.SwitchingParams, switching.switching_plan, "SET/RESET cycles"
        ),
        ProtocolSpec("pulse_train", pulse_train.PulseTrainParams, pulse_train.plan, "LTP then LTD"),
        ProtocolSpec(
            "endurance",
            switching.EnduranceParams,
            switching.endurance_plan,
            "cycling until the window collapses",
        ),
        ProtocolSpec(
            "retention", timed_reads.RetentionParams, timed_reads.retention_plan, "reads over time"
        ),
        ProtocolSpec(
            "read_noise", timed_reads.ReadNoiseParams, timed_reads.read_noise_plan, "repeated reads"
        ),
        ProtocolSpec(
            "conductance_map",
            timed_reads.ConductanceMapParams,
            timed_reads.conductance_map_plan,
            "one full read",
        ),
        ProtocolSpec(
            "wafer_campaign",
            wafer.WaferCampaignParams,
            wafer.plan,
            "inner protocol per die/subsite over a prober",
        ),
        ProtocolSpec(
            "switch_seeker",
            switch_seeker.SwitchSeekerParams,
            switch_seeker.plan,
            "ramped pulses until the state switches: threshold and polarity",
        ),
        ProtocolSpec(
            "multistate_seeker",
            multistate_seeker.MultiStateParams,
            multistate_seeker.plan,
            "distinguishable, stable conductance levels",
        ),
        ProtocolSpec(
            "converge_to_state",
            converge.ConvergeParams,
            converge.plan,
            "program-and-verify to target conductances",
        ),
        ProtocolSpec("stdp", stdp.STDPParams, stdp.plan, "conductance change vs spike delay"),
        ProtocolSpec(
            "volatility",
            transients.VolatilityParams,
            transients.volatility_plan,
            "relaxation right after programming",
        ),
        ProtocolSpec(
            "chronoamperometry",
            transients.ChronoParams,
            transients.chronoamperometry_plan,
            "current vs time under constant bias",
        ),
        ProtocolSpec(
            "multi_bias",
            multi_bias.MultiBiasParams,
            multi_bias.plan,
            "one row driven, columns read",
        ),
        ProtocolSpec(
            "sequence",
            sequence.SequenceParams,
            sequence.plan,
            "user-composed pulse/read/wait/ramp/loop blocks",
        ),
    ):
        register(spec)


def protocol_names() -> list[str]:
    _builtin()
    return sorted(_REGISTRY)


def protocol_specs() -> dict[str, ProtocolSpec]:
    """Every registered protocol by name (its parameter dataclass, plan and description)."""
    _builtin()
    return dict(sorted(_REGISTRY.items()))


def build_protocol(
    name: str,
    params: Mapping[str, Any] | Any = None,
    *,
    source: str | None = None,
    prefix: str | None = None,
) -> ProtocolPlan:
    """The plan factory of protocol ``name``; ``params`` a mapping (from YAML) or the
    protocol's params dataclass. Config errors name ``source`` and ``prefix.key``
    (prefix defaults to the protocol name)."""
    _builtin()
    if name not in _REGISTRY:
        raise ConfigError(
            prefix or "protocol", f"unknown protocol {name!r} (known: {protocol_names()})", source
        )
    spec = _REGISTRY[name]
    p: Any = from_mapping(spec.params_cls, params, source=source, prefix=prefix or name)
    return ProtocolPlan(name, p, spec.plan)
