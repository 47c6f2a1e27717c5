"""Families built on timm: ViT, ResNet, ConvNeXt and MLP-Mixer, with width and depth knobs.

Each family maps its spec parameters onto one timm constructor and adapts the model to the dataset
(image size, input channels, classes). Probe points: the stem (patch embedding) as stage 0, then
every block output in forward order. Token outputs (n, tokens, dim) are read by the family's
`tokens` rule (see ProbePoint), so CKA, PCA and every other FeatureCapture consumer see the same
features. timm is imported inside the builders: it takes seconds, and listing families must not.

Weights are downloaded only for `pretrained: true`, which validation accepts only when the weights
are in the local Hugging Face cache or the hub is reachable now.
"""

from __future__ import annotations

import functools
import socket
from typing import Literal
from urllib.parse import urlparse

import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from benchsuite.errors import BenchError
from benchsuite.models.registry import ProbePoint, register_family, whole_point

_FORBID = ConfigDict(extra="forbid")
_PRETRAINED = "start from timm's ImageNet weights (shapes listed in README); they must be cached or downloadable"


# --- shared rules -----------------------------------------------------------------------------

def _grid_patch(family: str, patch_size: int | None, image_size: int) -> int:
    """The patch size of a ViT or Mixer: null picks the largest one that divides the image and
    still leaves at least an 8x8 grid of tokens (patch 4 on 32px, 2 on 16px, 1 on 8px images)."""
    if patch_size is None:
        return max(p for p in range(1, max(1, image_size // 8) + 1) if image_size % p == 0)
    if image_size % patch_size:
        raise BenchError(f"{family}: patch_size {patch_size} does not divide the image size {image_size}")
    return patch_size


def _token_points(stem: str, blocks: int, tokens: str, prefix_tokens: int) -> list[ProbePoint]:
    # At the stem the class token is the same learned vector for every image (zero variance, no
    # CKA), so `cls` reads the mean of the patch tokens there.
    stem_rule = "mean" if tokens == "cls" else tokens
    return ([ProbePoint("stem", stem, 0, tokens=stem_rule, prefix_tokens=prefix_tokens)]
            + [ProbePoint(f"block{i}", f"blocks.{i}", 1, tokens=tokens, prefix_tokens=prefix_tokens)
               for i in range(blocks)])


def _stage_lists(v, expand, stages: int | None, what: str) -> list[int]:
    """An int is shorthand that `expand` turns into a per-stage list; a list must have `stages` entries."""
    values = expand(v) if isinstance(v, int) else list(v)
    if stages is not None and len(values) != stages:
        raise ValueError(f"{what} takes an int or a list of {stages} ints, got {len(values)} entries")
    if not values or min(values) < 1:
        raise ValueError(f"{what} entries must be positive ints, got {values}")
    return values


@functools.lru_cache(maxsize=None)
def _hub_reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
        return True
    except OSError:
        return False


def _require_weights(arch: str) -> None:
    """Pretrained weights of the timm model `arch` must be in the local Hugging Face cache, or the
    hub reachable so timm can fetch them when the run builds its model."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(arch).hf_hub_id  # timm hosts every default weight on the hub
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin")):
        return
    if not constants.HF_HUB_OFFLINE and _hub_reachable(constants.ENDPOINT):
        return
    raise ValueError(f"pretrained weights {repo} are not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                     f"and the hub is unreachable; fetch them once online with python -c \"import timm; "
                     f"timm.create_model('{arch}', pretrained=True)\", or set pretrained: false")


def _pretrained_arch(family: str, table: dict, key, wanted: str) -> str:
    """The timm model whose weights fit the architecture `key`, from the family's `table`."""
    if key not in table:
        raise ValueError(f"{family}: no pretrained weights for these shapes; pretrained needs {wanted}")
    return table[key]


def _build(cls, arch: str | None, kwargs: dict) -> nn.Module:
    """`cls(**kwargs)`, or timm's `arch` with its pretrained weights (adapted by timm to in_chans,
    num_classes and the image size) and the same kwargs."""
    if arch is None:
        return cls(**kwargs)
    import timm

    return timm.create_model(arch, pretrained=True, **kwargs)


# --- ViT ---------------------------------------------------------------------------------------

_VIT_SIZES = {(12, 192): "tiny", (12, 384): "small", (12, 768): "base", (24, 1024): "large"}


class ViTParams(BaseModel):
    model_config = _FORBID

    depth: int = Field(6, ge=1, description="transformer blocks")
    embed_dim: int = Field(192, ge=1, description="width: the token dimension")
    head_dim: int = Field(64, ge=1, description="attention heads = max(1, embed_dim // head_dim), which must "
                                                "divide embed_dim")
    patch_size: int | None = Field(None, ge=1, description="pixels per patch side; null: the largest that divides "
                                                            "the image and leaves an 8x8 or finer token grid")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / embed_dim")
    pool: Literal["token", "avg"] = Field("token", description="token: a class token feeds the head; "
                                                               "avg: no class token, the head averages the patch tokens")
    tokens: Literal["all", "cls", "mean"] = Field("all", description="probe features: all tokens flattened, the class "
                                                                     "token, or the mean of the patch tokens")
    pretrained: bool = Field(False, description=_PRETRAINED)

    @property
    def num_heads(self) -> int:
        return max(1, self.embed_dim // self.head_dim)

    @classmethod
    def smallest(cls) -> dict:
        return {"depth": 2, "embed_dim": 16}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if not whole_point(info):
            return self
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by its {self.num_heads} heads "
                             f"(embed_dim // head_dim, head_dim {self.head_dim}); pick a multiple of "
                             f"{self.num_heads} or another head_dim")
        if self.tokens == "cls" and self.pool != "token":
            raise ValueError("tokens: cls needs pool: token (with pool: avg there is no class token)")
        if self.pretrained:
            _require_weights(self.pretrained_arch())
        return self

    def pretrained_arch(self) -> str:
        table = {(d, e, 64, 4.0, "token"): size for (d, e), size in _VIT_SIZES.items()}
        size = _pretrained_arch("vit", table, (self.depth, self.embed_dim, self.head_dim, self.mlp_ratio, self.pool),
                                "depth 12 with embed_dim 192, 384 or 768, or depth 24 with 1024; head_dim 64, "
                                "mlp_ratio 4, pool token")
        from timm.models import get_pretrained_cfg

        # The checkpoint of the same patch size where timm has one; timm resamples the others.
        same_patch = f"vit_{size}_patch{self.patch_size}_224"
        return same_patch if get_pretrained_cfg(same_patch) is not None else f"vit_{size}_patch16_224"


@register_family("vit", ViTParams, "timm VisionTransformer: depth blocks of width embed_dim over a grid of patch tokens")
def _create_vit(p: ViTParams, *, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # Pretrained: timm resamples the checkpoint's patch embedding and position table to this
    # patch size and image size.
    patch = _grid_patch("vit", p.patch_size, image_size)
    kwargs = dict(img_size=image_size, patch_size=patch, in_chans=in_chans, num_classes=num_classes, depth=p.depth,
                  embed_dim=p.embed_dim, num_heads=p.num_heads, mlp_ratio=p.mlp_ratio,
                  class_token=p.pool == "token", global_pool=p.pool)
    model = _build(VisionTransformer, p.pretrained_arch() if p.pretrained else None, kwargs)
    # norm_pre's output is the block stack's input: patch tokens with the class token and positions.
    model.probe_points = _token_points("norm_pre", p.depth, p.tokens, model.num_prefix_tokens)
    return model


# --- MLP-Mixer ---------------------------------------------------------------------------------

class MixerParams(BaseModel):
    model_config = _FORBID

    depth: int = Field(8, ge=1, description="mixer blocks")
    embed_dim: int = Field(256, ge=1, description="width: the token dimension")
    patch_size: int | None = Field(None, ge=1, description="pixels per patch side; null: the largest that divides "
                                                            "the image and leaves an 8x8 or finer token grid")
    token_mlp_ratio: float = Field(0.5, gt=0, description="token-mixing MLP hidden width / embed_dim")
    channel_mlp_ratio: float = Field(4.0, gt=0, description="channel-mixing MLP hidden width / embed_dim")
    tokens: Literal["all", "mean"] = Field("all", description="probe features: all tokens flattened, or their mean "
                                                              "(a Mixer has no class token)")

    @classmethod
    def smallest(cls) -> dict:
        return {"depth": 2, "embed_dim": 16}


# No `pretrained`: token-mixing MLPs are sized by the number of patches, so ImageNet weights fit
# 224px inputs only.
@register_family("mixer", MixerParams, "timm MLP-Mixer: depth blocks of width embed_dim, token and channel MLPs")
def _create_mixer(p: MixerParams, *, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    model = MlpMixer(num_classes=num_classes, img_size=image_size, in_chans=in_chans,
                     patch_size=_grid_patch("mixer", p.patch_size, image_size), num_blocks=p.depth,
                     embed_dim=p.embed_dim, mlp_ratio=(p.token_mlp_ratio, p.channel_mlp_ratio))
    model.probe_points = _token_points("stem", p.depth, p.tokens, 0)
    return model


# --- ResNet ------------------------------------------------------------------------------------

_RESNET_WEIGHTS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                   ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                   ("bottleneck", (3, 8, 36, 3)): "resnet152"}


class TimmResNetParams(BaseModel):
    model_config = _FORBID

    layers: int | list[int] = Field(2, description="blocks per stage: a list (one stage per entry), "
                                                   "or n for [n, n, n, n]")
    width: float = Field(1.0, gt=0, description="multiplier k: stage widths 64k, 128k, 256k, 512k "
                                                "(x4 at bottleneck outputs); the stem stays 64 wide, as in timm")
    block: Literal["basic", "bottleneck"] = Field("basic", description="basic (ResNet-18/34) or bottleneck (ResNet-50+)")
    stem: Literal["auto", "imagenet", "small"] = Field(
        "auto", description="imagenet: 7x7 stride-2 conv and max-pool (stride 4); small: 3x3 stride-1 conv, no pool; "
                            "auto: small below 64px images")
    pretrained: bool = Field(False, description=_PRETRAINED)

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        return _stage_lists(v, lambda n: [n] * 4, None, "layers")

    @field_validator("width")
    @classmethod
    def _whole_channels(cls, v):
        if (64 * v) % 1:
            raise ValueError(f"width {v} gives a fractional stage width 64k; use e.g. 0.125, 0.25, 0.5, 1, 2")
        return v

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(64 * self.width) << i for i in range(len(self.layers)))

    @classmethod
    def smallest(cls) -> dict:
        return {"layers": 1, "width": 0.125}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if whole_point(info) and self.pretrained:
            if self.stem == "small":
                raise ValueError("pretrained weights need the ImageNet stem; set stem: imagenet")
            _require_weights(self.pretrained_arch())
        return self

    def pretrained_arch(self) -> str:
        key = (self.block, tuple(self.layers), self.width)
        table = {(b, layers, 1.0): arch for (b, layers), arch in _RESNET_WEIGHTS.items()}
        return _pretrained_arch("timm_resnet", table, key, "width 1 with layers [2,2,2,2] or [3,4,6,3] (basic), "
                                "[3,4,6,3], [3,4,23,3] or [3,8,36,3] (bottleneck)")


@register_family("timm_resnet", TimmResNetParams, "timm ResNet: basic or bottleneck blocks per stage, width multiplier")
def _create_timm_resnet(p: TimmResNetParams, *, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    small = p.stem == "small" or (p.stem == "auto" and image_size < 64)
    if small and p.pretrained:
        raise BenchError(f"timm_resnet: pretrained weights need the ImageNet stem, and stem: {p.stem} picks the small "
                         f"one for {image_size}px images; set stem: imagenet")
    kwargs = dict(block=BasicBlock if p.block == "basic" else Bottleneck, layers=tuple(p.layers), channels=p.channels,
                  in_chans=in_chans, num_classes=num_classes)
    model = _build(ResNet, p.pretrained_arch() if p.pretrained else None, kwargs)
    if small:
        # The CIFAR ResNet stem: a 32px image keeps its resolution into the first stage.
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.probe_points = [ProbePoint("stem", "maxpool", 0)] + [
        ProbePoint(f"stage{s}.block{b}", f"layer{s}.{b}", s) for s, n in enumerate(p.layers, 1) for b in range(n)]
    return model


# --- ConvNeXt ----------------------------------------------------------------------------------

_CONVNEXT_WEIGHTS = {((2, 2, 6, 2), 40): "convnext_atto", ((2, 2, 6, 2), 48): "convnext_femto",
                     ((2, 2, 6, 2), 64): "convnext_pico", ((2, 2, 8, 2), 80): "convnext_nano",
                     ((3, 3, 9, 3), 96): "convnext_tiny", ((3, 3, 27, 3), 96): "convnext_small",
                     ((3, 3, 27, 3), 128): "convnext_base", ((3, 3, 27, 3), 192): "convnext_large"}


class ConvNeXtParams(BaseModel):
    model_config = _FORBID

    depths: int | list[int] = Field(2, description="blocks in each of the 4 stages, or n for [n, n, 3n, n] "
                                                   "(ConvNeXt's 1:1:3:1 ratio)")
    dims: int | list[int] = Field(40, description="widths of the 4 stages, or C for [C, 2C, 4C, 8C]")
    patch_size: int | None = Field(None, ge=1, description="stem stride; null: 4 for images of 32px or more, else 1 "
                                                           "(the 2x downsamplings of stages 2-4 need an 8px stem output)")
    pretrained: bool = Field(False, description=_PRETRAINED)

    @field_validator("depths")
    @classmethod
    def _depths(cls, v):
        return _stage_lists(v, lambda n: [n, n, 3 * n, n], 4, "depths")

    @field_validator("dims")
    @classmethod
    def _dims(cls, v):
        return _stage_lists(v, lambda c: [c, 2 * c, 4 * c, 8 * c], 4, "dims")

    @classmethod
    def smallest(cls) -> dict:
        return {"depths": 1, "dims": 8}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if whole_point(info) and self.pretrained:
            if self.patch_size not in (None, 4):
                raise ValueError(f"pretrained weights have a stem of stride 4, not patch_size {self.patch_size}")
            _require_weights(self.pretrained_arch())
        return self

    def pretrained_arch(self) -> str:
        c = self.dims[0]
        key = (tuple(self.depths), c if self.dims == [c, 2 * c, 4 * c, 8 * c] else None)
        return _pretrained_arch("convnext", _CONVNEXT_WEIGHTS, key, "depths 2 with dims 40, 48 or 64, "
                                "[2,2,8,2] with 80, 3 with 96, or [3,3,27,3] with 96, 128 or 192")


@register_family("convnext", ConvNeXtParams, "timm ConvNeXt: 4 stages of depths blocks at widths dims")
def _create_convnext(p: ConvNeXtParams, *, num_classes: int, in_chans: int, image_size: int) -> nn.Module:
    from timm.models.convnext import ConvNeXt

    patch = p.patch_size or (4 if image_size >= 32 else 1)
    # timm halves the stem output before each of stages 2-4, and before stage 1 too when the stem
    # stride is 2; every halving (a 2x2 stride-2 conv) needs at least 2px.
    halvings = 4 if patch == 2 else 3
    if image_size // patch < 2 ** halvings:
        raise BenchError(f"convnext: a {image_size}px image is {image_size // patch}px after a stem of patch_size {patch}, "
                         f"too small for its {halvings} 2x downsamplings; use patch_size 1 (or an image of >= 8px)")
    if p.pretrained and patch != 4:
        raise BenchError(f"convnext: pretrained weights have a stem of stride 4; {image_size}px images need "
                         f"patch_size {patch}")
    kwargs = dict(depths=tuple(p.depths), dims=tuple(p.dims), patch_size=patch, in_chans=in_chans,
                  num_classes=num_classes)
    model = _build(ConvNeXt, p.pretrained_arch() if p.pretrained else None, kwargs)
    model.probe_points = [ProbePoint("stem", "stem", 0)] + [
        ProbePoint(f"stage{s + 1}.block{b}", f"stages.{s}.blocks.{b}", s + 1)
        for s, n in enumerate(p.depths) for b in range(n)]
    return model
