"""Memory recurrent units (BMRU, CMRU, αCMRU): training, deployment and noise robustness."""

from memhil.algorithms.cmru.backbone import RecurrentBackbone
from memhil.algorithms.cmru.deploy import (
    Placement,
    deploy_to_backend,
    noise_robustness,
    plan_placement,
)
from memhil.algorithms.cmru.training import TrainConfig, TrainResult, evaluate, train
from memhil.algorithms.cmru.units import EpsSchedule, MemoryRecurrentUnit, acmru, bmru, cmru

__all__ = [
    "EpsSchedule",
    "MemoryRecurrentUnit",
    "Placement",
    "RecurrentBackbone",
    "TrainConfig",
    "TrainResult",
    "acmru",
    "bmru",
    "cmru",
    "deploy_to_backend",
    "evaluate",
    "noise_robustness",
    "plan_placement",
    "train",
]
