"""ResNet v1 for CIFAR (He et al. 2016, sec. 4.2), with a width multiplier.

depth = 6n + 2: a 3x3 stem, then three stages of n basic blocks with 16k, 32k, 64k channels
(k = width), stride 2 at the start of stages 2 and 3 with a projection (1x1 conv + BN)
shortcut, global average pooling and a linear head.

`stack=K` builds K such networks as one (seeds trained together): every layer grouped by run, each run's
channels a contiguous block, so the input is the K runs' images concatenated along channels and every
parameter and buffer is the K runs' tensors concatenated along dim 0 (`benchsuite.train.stack`).
BatchNorm is per channel, hence per run; the head maps each run's features to its own logits (n, K, classes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchsuite.models.registry import Add, ProbePoint, register_family


class CifarResNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(20, description="total depth, 6n+2: 8, 14, 20, 26, 32, 38, 44, 56, 110, 164, ...")
    width: int = Field(1, ge=1, description="width multiplier k: stage widths 16k, 32k, 64k")

    @field_validator("depth")
    @classmethod
    def _six_n_plus_two(cls, v: int) -> int:
        if v < 8 or (v - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, 38, 44, 56, 110, ...), got {v}")
        return v


class StackedLinear(nn.Module):
    """K linear layers, one per run, on features (n, K * in): logits (n, K, out). Weight and bias are the
    K runs' nn.Linear tensors concatenated along dim 0."""

    def __init__(self, cin: int, cout: int, stack: int):
        super().__init__()
        self.stack = stack
        self.weight = nn.Parameter(torch.empty(stack * cout, cin))
        self.bias = nn.Parameter(torch.empty(stack * cout))

    def forward(self, x):
        k = self.stack
        w = self.weight.view(k, -1, self.weight.shape[1])
        return torch.einsum("nki,koi->nko", x.view(len(x), k, -1), w) + self.bias.view(k, -1)


def _conv(cin: int, cout: int, size: int, stride: int, stack: int) -> nn.Conv2d:
    return nn.Conv2d(cin * stack, cout * stack, size, stride, size // 2, bias=False, groups=stack)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, stack: int = 1):
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride, stack)
        self.bn1 = nn.BatchNorm2d(cout * stack)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv(cout, cout, 3, 1, stack)
        self.bn2 = nn.BatchNorm2d(cout * stack)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride, stack), nn.BatchNorm2d(cout * stack))
        self.add = Add()
        self.relu2 = nn.ReLU(inplace=True)
        self.skip_branch = False  # block deletion: output relu(shortcut(x)) only

    def forward(self, x):
        short = self.shortcut(x)
        if self.skip_branch:
            return self.relu2(short)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.add(out, short))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int, in_chans: int, stack: int = 1):
        super().__init__()
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(_conv(in_chans, widths[0], 3, 1, stack),
                                  nn.BatchNorm2d(widths[0] * stack), nn.ReLU(inplace=True))
        points = [ProbePoint("stem", "stem", 0)]
        stages, cin = [], widths[0]
        for s, cout in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (s > 0 and b == 0) else 1, stack))
                points.append(ProbePoint(f"stage{s + 1}.block{b}", f"stages.{s}.{b}", s + 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes) if stack == 1 else StackedLinear(cin, num_classes, stack)
        self.probe_points = points
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def zero_init_residual(self) -> None:
        """Zero the last BatchNorm scale of every residual branch: each block starts as its shortcut."""
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


@register_family("cifar_resnet", CifarResNetParams, "ResNet v1 for CIFAR: depth 6n+2, stage widths 16k/32k/64k",
                 stacks=True, zero_init=True)
def _create_cifar_resnet(p: CifarResNetParams, *, num_classes: int, in_chans: int, image_size: int,
                         stack: int = 1) -> nn.Module:
    return CifarResNet(p.depth, p.width, num_classes, in_chans, stack)
