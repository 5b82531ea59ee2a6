"""Networks for edge pruning (``docs/algorithms.md#networks-and-data``, scaled down for
CPU): an MLP and a small CNN for digits, a convolutional-recurrent net for JapaneseVowels
and a small U-Net for vessel segmentation. Every weight matrix comes from a
:class:`WeightSource` made by a factory ``(name, (out, in), gain) -> source``, so one
architecture serves the pruned random network, the float baselines and the readout-only
baseline; no biases, BatchNorm without affine parameters, activations quantized after every
hidden layer."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memhil.algorithms.pruning.edge_popup import (
    FloatWeight,
    WeightSource,
    backend_linear,
    quantize_activations,
)
from memhil.analog.mapping import WeightMapping
from memhil.backends.base import Backend

SourceFactory = Callable[[str, tuple[int, int], float], WeightSource]
RELU_GAIN = math.sqrt(2.0)
# Logit scale of the output layer. Masking cannot rescale fixed random magnitudes, so the
# readout's Kaiming gain sets the softmax temperature; at gain 1 the pruned MLP underfits
# digits (95 % train accuracy), at 4 it fits (99 %).
READOUT_GAIN = 4.0


#: Rows per ``mvm`` request when a layer runs on the array (bounds the row-voltage matrix).
MVM_CHUNK = 8192


class SourcedLayer(nn.Module):
    """A layer whose (out, in) weight matrix comes from a source; with :meth:`attach` its
    products are read from the array through ``mvm`` (analog inference of a deployed
    layer), with :meth:`run_on` computed by any module that maps (M, in) -> (M, out) (an
    ``AnalogLinear`` holding programmed weights)."""

    def __init__(self, source: WeightSource):
        super().__init__()
        self.source = source
        self._analog: Callable[[Tensor], Tensor] | None = None

    def attach(self, backend: Backend | None, mapping: WeightMapping | None = None) -> None:
        if backend is None or mapping is None:
            self._analog = None
            return
        scale = getattr(self.source, "scale", None)
        if scale is None:
            raise TypeError("only hardware layers (masked or fixed) can run on the array")

        def product(x: Tensor) -> Tensor:
            parts = [backend_linear(backend, mapping, c) for c in x.split(MVM_CHUNK)]
            return torch.cat(parts) / scale

        self._analog = product

    def run_on(self, product: Callable[[Tensor], Tensor] | None) -> None:
        """Compute x W^T with ``product`` (None: the source's weights in float)."""
        self._analog = product

    def _rows(self, x2: Tensor) -> Tensor:
        """x2 (M, in) times the weights, by the attached product."""
        assert self._analog is not None
        return self._analog(x2)


class SourcedLinear(SourcedLayer):
    """y = x W^T over the last axis of x."""

    def forward(self, x: Tensor) -> Tensor:
        if self._analog is None:
            return F.linear(x, self.source.weight())
        return self._rows(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class SourcedConv2d(SourcedLayer):
    """2-d convolution whose (out, in_ch k k) matrix comes from the source; on a product
    it runs as im2col patches times that matrix (one row per output pixel)."""

    def __init__(self, source: WeightSource, in_ch: int, kernel: int, padding: int = 0):
        super().__init__(source)
        self.in_ch, self.kernel, self.padding = in_ch, kernel, padding

    def forward(self, x: Tensor) -> Tensor:
        k, p = self.kernel, self.padding
        if self._analog is None:
            w = self.source.weight()
            return F.conv2d(x, w.view(w.shape[0], self.in_ch, k, k), padding=p)
        n, _, h, w_ = x.shape
        cols = F.unfold(x, k, padding=p)  # (N, C k k, L), channel-major like the weights
        y = self._rows(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
        return (
            y.view(n, -1, y.shape[-1])
            .transpose(1, 2)
            .reshape(n, -1, h + 2 * p - k + 1, w_ + 2 * p - k + 1)
        )


class SourcedConv1d(SourcedLayer):
    """1-d convolution over time, (out, in_ch k) from the source; im2col on a product."""

    def __init__(self, source: WeightSource, in_ch: int, kernel: int, padding: int = 0):
        super().__init__(source)
        self.in_ch, self.kernel, self.padding = in_ch, kernel, padding

    def forward(self, x: Tensor) -> Tensor:
        k, p = self.kernel, self.padding
        if self._analog is None:
            w = self.source.weight()
            return F.conv1d(x, w.view(w.shape[0], self.in_ch, k), padding=p)
        n, _, t = x.shape
        cols = F.unfold(x[:, :, None, :], (1, k), padding=(0, p))  # (N, C k, L)
        y = self._rows(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
        return y.view(n, t + 2 * p - k + 1, -1).transpose(1, 2)


def sourced_layers(model: nn.Module) -> list[SourcedLayer]:
    """The weight layers of ``model`` in build order (the order of its sources)."""
    return [m for m in model.modules() if isinstance(m, SourcedLayer)]


def attach_layers(
    model: nn.Module, backend: Backend | None, mappings: Sequence[WeightMapping | None] | None
) -> None:
    """Run layer i on ``backend`` in region ``mappings[i]`` (None there: that layer in
    float), or, with ``backend`` None, every layer in float again."""
    for i, layer in enumerate(sourced_layers(model)):
        layer.attach(backend, None if mappings is None else mappings[i])


def run_layers_on(model: nn.Module, products: Sequence[Callable[[Tensor], Tensor]] | None) -> None:
    """Compute layer i's product with ``products[i]`` (programmed arrays), or, with None,
    in float again."""
    for i, layer in enumerate(sourced_layers(model)):
        layer.run_on(None if products is None else products[i])


def layer_shapes(
    build: Callable[[SourceFactory], nn.Module],
) -> list[tuple[str, tuple[int, int], float]]:
    """(name, (out, in), gain) of every weight matrix of a network, in build order."""
    seen: list[tuple[str, tuple[int, int], float]] = []

    def probe(name, shape, gain):
        seen.append((name, shape, gain))
        return FloatWeight(shape, gain=gain)

    build(probe)
    return seen


class MLP(nn.Module):
    """sizes[0] -> ... -> sizes[-1], ReLU and activation quantization between layers."""

    def __init__(self, factory: SourceFactory, sizes=(64, 128, 10), bits: int | None = 4):
        super().__init__()
        n = len(sizes) - 1
        self.layers = nn.ModuleList(
            SourcedLinear(
                factory(
                    "readout" if i == n - 1 else f"fc{i}",
                    (sizes[i + 1], sizes[i]),
                    READOUT_GAIN if i == n - 1 else RELU_GAIN,
                )
            )
            for i in range(n)
        )
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = quantize_activations(F.relu(layer(x)), self.bits)
        return self.layers[-1](x)

    def attach(self, backend: Backend | None, mappings=None) -> None:
        """Run every layer on ``backend`` (deployed regions ``mappings``), or detach."""
        attach_layers(self, backend, mappings)

    def run_on(self, products: Sequence[Callable[[Tensor], Tensor]] | None) -> None:
        """Compute layer i's product with ``products[i]`` (programmed arrays), or, with
        None, in float again."""
        run_layers_on(self, products)


class DigitCNN(nn.Module):
    """8x8 digits: conv 3x3 -> BN -> ReLU -> conv 3x3 -> maxpool -> BN -> ReLU -> FC -> FC."""

    def __init__(
        self,
        factory: SourceFactory,
        channels=(32, 32),
        hidden: int = 64,
        n_classes: int = 10,
        bits: int | None = 4,
    ):
        super().__init__()
        c1, c2 = channels
        self.conv1 = SourcedConv2d(factory("conv1", (c1, 9), RELU_GAIN), 1, 3, 1)
        self.conv2 = SourcedConv2d(factory("conv2", (c2, c1 * 9), RELU_GAIN), c1, 3, 1)
        self.fc = SourcedLinear(factory("fc", (hidden, c2 * 16), RELU_GAIN))
        self.readout = SourcedLinear(factory("readout", (n_classes, hidden), READOUT_GAIN))
        self.bn1 = nn.BatchNorm2d(c1, affine=False)
        self.bn2 = nn.BatchNorm2d(c2, affine=False)
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        q = self.bits
        x = quantize_activations(F.relu(self.bn1(self.conv1(x))), q)
        x = quantize_activations(F.relu(self.bn2(F.max_pool2d(self.conv2(x), 2))), q)
        x = quantize_activations(F.relu(self.fc(x.flatten(1))), q)
        return self.readout(x)


class ConvRNN(nn.Module):
    """Sequences (N, T, D): conv1d over time -> BN -> ReLU -> ReLU-RNN (input and
    recurrent weights masked) -> mean over the valid steps -> FC."""

    def __init__(
        self,
        factory: SourceFactory,
        n_in: int = 12,
        channels: int = 32,
        hidden: int = 64,
        n_classes: int = 9,
        bits: int | None = 3,
    ):
        super().__init__()
        self.conv = SourcedConv1d(factory("conv", (channels, n_in * 3), RELU_GAIN), n_in, 3, 1)
        self.bn = nn.BatchNorm1d(channels, affine=False)
        # unit gains keep the ReLU recurrence's second moment bounded (E h^2 -> E x^2)
        self.w_in = SourcedLinear(factory("rnn_in", (hidden, channels), 1.0))
        self.w_rec = SourcedLinear(factory("rnn_rec", (hidden, hidden), 1.0))
        self.readout = SourcedLinear(factory("readout", (n_classes, hidden), READOUT_GAIN))
        self.bits = bits

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        q = self.bits
        # steps past a sequence's length are zeroed before each quantization, so how long
        # the other sequences of its batch are changes neither its states nor its range
        # (the padding adds zeros, the low end a ReLU output's range nearly always has)
        valid = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        if lengths is not None:
            steps = torch.arange(x.shape[1], device=x.device)
            valid = (steps[None, :] < lengths[:, None].to(x.device)).to(x.dtype)
        z = F.relu(self.bn(self.conv(x.transpose(1, 2)))) * valid[:, None]
        z = quantize_activations(z, q).transpose(1, 2)
        drive = self.w_in(z)  # (N, T, H), all steps at once
        h = torch.zeros_like(drive[:, 0])
        states = []
        for t in range(drive.shape[1]):  # the recurrence is inherently sequential
            h = F.relu(drive[:, t] + self.w_rec(h))
            states.append(h)
        hs = quantize_activations(torch.stack(states, 1) * valid[..., None], q)
        pooled = hs.sum(1) / valid.sum(1)[:, None]
        return self.readout(pooled)


class UNet(nn.Module):
    """Small U-Net (``depth`` downsamplings, bilinear upsampling, skip concatenation),
    every conv masked, 2-class output per pixel."""

    def __init__(
        self,
        factory: SourceFactory,
        base: int = 8,
        depth: int = 2,
        n_in: int = 1,
        bits: int | None = 6,
    ):
        super().__init__()
        self.bits = bits
        chans = [base * 2**i for i in range(depth + 1)]
        self.convs = nn.ModuleDict()
        self.bns = nn.ModuleDict()

        def block(name: str, c_in: int, c_out: int) -> None:
            for j, (a, b) in enumerate(((c_in, c_out), (c_out, c_out))):
                key = f"{name}_{j}"
                self.convs[key] = SourcedConv2d(factory(key, (b, a * 9), RELU_GAIN), a, 3, 1)
                self.bns[key] = nn.BatchNorm2d(b, affine=False)

        prev = n_in
        for i, c in enumerate(chans):
            block(f"down{i}", prev, c)
            prev = c
        for i in reversed(range(depth)):
            block(f"up{i}", prev + chans[i], chans[i])
            prev = chans[i]
        self.head = SourcedConv2d(factory("readout", (2, prev), READOUT_GAIN), prev, 1, 0)
        self.depth = depth

    def _block(self, name: str, x: Tensor) -> Tensor:
        for j in range(2):
            key = f"{name}_{j}"
            x = quantize_activations(F.relu(self.bns[key](self.convs[key](x))), self.bits)
        return x

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i in range(self.depth):
            x = self._block(f"down{i}", x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self._block(f"down{self.depth}", x)
        for i in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self._block(f"up{i}", torch.cat([x, skips[i]], 1))
        return self.head(x)  # (N, 2, H, W)
