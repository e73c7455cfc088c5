"""Named pure-torch architectures for ``format = "state_dict"`` models (no torchvision).

``resnet18`` and ``resnet34`` use torchvision's parameter names (``conv1``,
``bn1``, ``layer1.0.conv1`` ... ``fc``), so a state_dict trained with
torchvision's ResNet loads as is (``in_channels`` other than 3 changes only
``conv1``). ``demo_cnn`` is the small network of the built-in demo-cxr model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DemoCNN(nn.Module):
    """Four conv-BN-ReLU stages, global average pooling, one linear layer."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(4):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1,
                                 bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with basic blocks, parameter names as in torchvision."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        stages = []
        for i, n in enumerate(blocks):
            c_out = 64 * 2 ** i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride)] + [BasicBlock(c_out, c_out)
                                                          for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "demo_cnn": lambda n, c: DemoCNN(n, c),
    "resnet18": lambda n, c: ResNet((2, 2, 2, 2), n, c),
    "resnet34": lambda n, c: ResNet((3, 4, 6, 3), n, c),
}


def build(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """An untrained network of a named architecture."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (known: {sorted(ARCHITECTURES)})") \
            from None
    return factory(num_classes, in_channels)


def seeded_demo_cnn(num_classes: int, in_channels: int, seed: int) -> nn.Module:
    """The demo-cxr network with fixed weights drawn from *seed* (no download, no training:
    its outputs mean nothing clinically)."""
    gen = torch.Generator().manual_seed(seed)
    net = DemoCNN(num_classes, in_channels)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:  # conv and linear weights: He-scaled normal; BN and biases default
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            elif p is net.fc.bias:
                p.zero_()
    return net.eval()
