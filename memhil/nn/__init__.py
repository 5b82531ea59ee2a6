"""Float sequence building blocks and baselines: the parallel scan, pooling, LRU, minGRU."""

from memhil.nn.lru import LRU, LRUClassifier
from memhil.nn.mingru import CandidatePerturbation, MinGRU
from memhil.nn.pooling import Pooling, pool_states
from memhil.nn.scan import linear_recurrence_loop, linear_scan

__all__ = [
    "LRU",
    "CandidatePerturbation",
    "LRUClassifier",
    "MinGRU",
    "Pooling",
    "linear_recurrence_loop",
    "linear_scan",
    "pool_states",
]
