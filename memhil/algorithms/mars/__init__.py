"""MARS: diagonal-recurrence reservoirs with a ridge readout, deployable onto a backend."""

from memhil.algorithms.mars.deploy import DeployedMARS, deploy_mars, place_regions
from memhil.algorithms.mars.layer import MARS, MARSLayer
from memhil.algorithms.mars.readout import RidgeClassifier, fit_ridge
from memhil.algorithms.mars.reservoirs import MFESN, LeakyESN

__all__ = [
    "MARS",
    "MFESN",
    "DeployedMARS",
    "LeakyESN",
    "MARSLayer",
    "RidgeClassifier",
    "deploy_mars",
    "fit_ridge",
    "place_regions",
]
