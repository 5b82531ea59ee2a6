"""Edge-popup pruning of random formed weights, deployed as SET/RESET switches."""

from memhil.algorithms.pruning.edge_popup import (
    FormingRecipe,
    SwitchPulses,
    deploy_masks,
    form_random_weights,
    layout_layers,
    train,
)
from memhil.algorithms.pruning.models import MLP, ConvRNN, DigitCNN, UNet

__all__ = [
    "MLP",
    "ConvRNN",
    "DigitCNN",
    "FormingRecipe",
    "SwitchPulses",
    "UNet",
    "deploy_masks",
    "form_random_weights",
    "layout_layers",
    "train",
]
