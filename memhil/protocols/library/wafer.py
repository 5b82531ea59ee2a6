"""Wafer campaign: for each die and subsite, move, contact, run an inner protocol,
separate. Unit keys and records carry the die and subsite; a die/subsite whose inner run
completed is skipped on resume without moving there. Needs a prober (the pre-flight
rejects a backend without one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from memhil.core.config import require
from memhil.protocols.plan import (
    Checkpoint,
    Commit,
    Contact,
    IsDone,
    Move,
    ProberMap,
    Separate,
    prefixed,
)


@dataclass(frozen=True)
class WaferCampaignParams:
    dies: tuple[tuple[int, int], ...] = ((0, 0),)
    subsites: int = 1
    inner: str = "conductance_map"
    inner_params: dict = field(default_factory=dict)
    load_map: bool = True

    def __post_init__(self) -> None:
        require(len(self.dies) > 0, "dies", "must list at least one [x, y] die")
        require(self.subsites >= 1, "subsites", f"must be >= 1, got {self.subsites}")
        require(self.inner != "wafer_campaign", "inner", "a campaign cannot nest a campaign")
        from memhil.protocols.registry import build_protocol, protocol_names

        require(
            self.inner in protocol_names(),
            "inner",
            f"unknown protocol {self.inner!r} (known: {protocol_names()})",
        )
        build_protocol(self.inner, self.inner_params, prefix="inner_params")  # validate now


def plan(p: WaferCampaignParams, caps):
    from memhil.protocols.registry import build_protocol

    inner = build_protocol(p.inner, p.inner_params)
    if p.load_map:
        yield ProberMap(tuple((int(d[0]), int(d[1])) for d in p.dies), p.subsites)
    for xy in p.dies:
        die = (int(xy[0]), int(xy[1]))
        for sub in range(p.subsites):
            site_key = ("wafer", die[0], die[1], sub)
            if (yield IsDone(site_key)):
                continue
            yield Move(die, sub)
            yield Contact()
            yield from prefixed(
                inner(caps), site_key, {"die_x": die[0], "die_y": die[1], "subsite": sub}
            )
            yield Separate()
            yield Checkpoint(site_key)
            yield Commit(site_key)
