"""ResNet v1 for CIFAR (He et al. 2016, sec. 4.2), with a width multiplier.

depth = 6n + 2: a 3x3 stem, then three stages of n basic blocks with 16k, 32k, 64k channels
(k = width), stride 2 at the start of stages 2 and 3 with a projection (1x1 conv + BN)
shortcut, global average pooling and a linear head.
"""

from __future__ import annotations

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


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
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
    def __init__(self, depth: int, width: int, num_classes: int, in_chans: int):
        super().__init__()
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        points = [ProbePoint("stem", "stem", 0)]
        stages, cin = [], widths[0]
        for s, cout in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (s > 0 and b == 0) else 1))
                points.append(ProbePoint(f"stage{s + 1}.block{b}", f"stages.{s}.{b}", s + 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_classes)
        self.probe_points = points
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


@register_family("cifar_resnet", CifarResNetParams, "ResNet v1 for CIFAR: depth 6n+2, stage widths 16k/32k/64k")
def _create_cifar_resnet(p: CifarResNetParams, *, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    return CifarResNet(p.depth, p.width, num_classes, in_chans)
