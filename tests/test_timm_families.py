"""timm families: token rules, adaptation to the dataset, spec rejections, pretrained weights offline."""

import json

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from benchsuite.measure import FeatureCapture
from benchsuite.measure.capture import read_tokens
from benchsuite.models import create_model, probe_points
from benchsuite.spec import expand, parse_spec, run_name

SPEC = """\
name: t
dataset: {{name: digits, train_size: 200, eval_size: 100}}
family: {{name: {family}, grid: {grid}}}
seeds: [0]
train: {{epochs: 1, batch_size: 50, optimizer: adamw, lr: 1.0e-3}}
measure: {{batch_size: 50}}
analyses: [cka, pcs]
"""


def features(model, x, points=None):
    with FeatureCapture(model, points or probe_points(model)) as cap, torch.no_grad():
        model.eval()(x)
    return cap.features


# --- token rules -------------------------------------------------------------------------------

def test_read_tokens_rules():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert read_tokens(x) is x
    assert torch.equal(read_tokens(x, "cls", 1), x[:, 0])
    assert torch.equal(read_tokens(x, "mean", 1), x[:, 1:].mean(1))
    assert torch.equal(read_tokens(x, "mean"), x.mean(1))
    with pytest.raises(ValueError, match=r"needs a \(n, tokens, dim\) output"):
        read_tokens(torch.zeros(2, 3, 4, 4), "cls")


@pytest.mark.parametrize("tokens", ["all", "cls", "mean"])
def test_vit_token_rules_shape_what_cka_and_pca_read(tokens):
    torch.manual_seed(0)
    model = create_model("vit", num_classes=4, in_chans=1, image_size=8, depth=2, embed_dim=16, patch_size=2,
                         tokens=tokens)
    x = torch.randn(5, 1, 8, 8)
    points = probe_points(model)
    assert [(p.name, p.module, p.stage) for p in points] == [("stem", "norm_pre", 0), ("block0", "blocks.0", 1),
                                                            ("block1", "blocks.1", 1)]
    raw = features(model, x, [type(p)(p.name, p.module, p.stage) for p in points])  # every token
    assert [tuple(f.shape) for f in raw] == [(5, 17, 16)] * 3  # 4x4 patches + the class token
    got = features(model, x)
    if tokens == "all":
        assert all(torch.equal(g, r) for g, r in zip(got, raw))
    elif tokens == "cls":
        # The stem's class token is the same vector for every image, so the stem reads the patch mean.
        assert torch.allclose(got[0], raw[0][:, 1:].mean(1))
        assert all(torch.equal(g, r[:, 0]) for g, r in zip(got[1:], raw[1:]))
    else:
        assert all(torch.allclose(g, r[:, 1:].mean(1)) for g, r in zip(got, raw))


def test_vit_avg_pool_has_no_class_token_and_mixer_means_all_tokens():
    vit = create_model("vit", in_chans=1, image_size=8, depth=1, embed_dim=16, pool="avg", tokens="mean")
    assert vit.cls_token is None and {p.prefix_tokens for p in probe_points(vit)} == {0}
    mixer = create_model("mixer", in_chans=1, image_size=8, depth=2, embed_dim=16, tokens="mean")
    assert [p.name for p in probe_points(mixer)] == ["stem", "block0", "block1"]
    assert [tuple(f.shape) for f in features(mixer, torch.randn(3, 1, 8, 8))] == [(3, 16)] * 3


# --- adaptation to the dataset -----------------------------------------------------------------

@pytest.mark.parametrize("image_size,patch", [(8, 1), (16, 2), (28, 2), (32, 4)])
def test_token_grid_rule(image_size, patch):
    for family in ("vit", "mixer"):
        model = create_model(family, num_classes=3, in_chans=1, image_size=image_size, depth=1, embed_dim=8)
        embed = model.patch_embed if family == "vit" else model.stem
        assert embed.patch_size == (patch, patch)
        assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 3)


@pytest.mark.parametrize("family,params", [("vit", {"depth": 1, "embed_dim": 8}), ("mixer", {"depth": 1, "embed_dim": 8}),
                                           ("timm_resnet", {"layers": 1, "width": 0.125}),
                                           ("convnext", {"depths": 1, "dims": 8})])
@pytest.mark.parametrize("image_size,in_chans,num_classes", [(8, 1, 10), (32, 3, 100)])
def test_image_size_channels_and_classes(family, params, image_size, in_chans, num_classes):
    model = create_model(family, num_classes=num_classes, in_chans=in_chans, image_size=image_size, **params)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == in_chans
    out = model(torch.randn(2, in_chans, image_size, image_size))
    assert out.shape == (2, num_classes)
    feats = features(model, torch.randn(4, in_chans, image_size, image_size))
    assert all(f.shape[0] == 4 and f[0].numel() > 0 for f in feats)


def test_resnet_stem_and_convnext_patch_follow_the_image_size():
    small = create_model("timm_resnet", image_size=32, layers=[1, 1], width=0.125)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert [p.name for p in probe_points(small)] == ["stem", "stage1.block0", "stage2.block0"]
    big = create_model("timm_resnet", image_size=64, layers=1, width=0.125)
    assert big.conv1.kernel_size == (7, 7) and isinstance(big.maxpool, torch.nn.MaxPool2d)
    assert create_model("convnext", image_size=32, depths=1, dims=8).stem[0].stride == (4, 4)
    tiny = create_model("convnext", image_size=8, depths=1, dims=8)
    assert tiny.stem[0].stride == (1, 1)
    assert [p.stage for p in probe_points(tiny)] == [0, 1, 2, 3, 3, 3, 4]


def test_size_limits_fail_with_one_clear_line():
    from benchsuite.errors import BenchError

    with pytest.raises(BenchError, match="convnext: a 16px image is 8px after a stem of patch_size 2"):
        create_model("convnext", image_size=16, patch_size=2, depths=1, dims=8)
    with pytest.raises(BenchError, match="vit: patch_size 3 does not divide the image size 8"):
        create_model("vit", image_size=8, patch_size=3, depth=1, embed_dim=8)


def test_int_shorthands_expand_to_canonical_lists():
    spec = parse_spec(SPEC.format(family="convnext", grid="{depths: [1, [1, 1, 1, 1]], dims: 8}"))
    assert [run_name(c) for c in expand(spec)] == ["convnext[depths=[1, 1, 3, 1],dims=[8, 16, 32, 64],patch_size=None,pretrained=False]",
                                                   "convnext[depths=[1, 1, 1, 1],dims=[8, 16, 32, 64],patch_size=None,pretrained=False]"]
    resnet = parse_spec(SPEC.format(family="timm_resnet", grid="{layers: [2]}"))
    assert expand(resnet)[0].params["layers"] == [2, 2, 2, 2]


# --- rejections through `bench validate` -------------------------------------------------------

REJECT = [
    ("unknown parameter", "vit", "{depth: [2], width: [2]}",
     "t.yaml: family.grid.width: unknown parameter of vit; allowed: depth, embed_dim, head_dim, patch_size, mlp_ratio, pool, tokens, pretrained"),
    ("no class token in a mixer", "mixer", "{tokens: [cls]}", "t.yaml: family.grid.tokens[0]: Input should be 'all' or 'mean'"),
    ("heads do not divide", "vit", "{embed_dim: [64, 200]}",
     "t.yaml: family.grid: embed_dim 200 is not divisible by its 3 heads"),
    ("cls without class token", "vit", "{pool: [avg], tokens: [cls]}", "tokens: cls needs pool: token"),
    ("convnext stages", "convnext", "{depths: [[1, 2, 3]]}",
     "t.yaml: family.grid.depths[0]: depths takes an int or a list of 4 ints, got 3 entries"),
    ("fractional width", "timm_resnet", "{width: [0.3]}", "family.grid.width[0]: width 0.3 gives a fractional stage width"),
    ("no weights for the shape", "vit", "{depth: [2], pretrained: [true]}", "vit: no pretrained weights for these shapes"),
    ("unknown family", "resnet50", "{}", "t.yaml: family.name: unknown family 'resnet50'; allowed: cifar_resnet, convnext"),
]


@pytest.mark.parametrize("family,grid,message", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_bad_params_are_rejected_by_validate(workdir, cli, family, grid, message):
    (workdir / "t.yaml").write_text(SPEC.format(family=family, grid=grid))
    result = cli("validate", "t.yaml")
    err = result.stderr.strip()
    assert result.exit_code == 2 and len(err.splitlines()) == 1 and "Traceback" not in result.output, result.output
    assert message in err


def test_a_head_dim_in_the_grid_is_checked_with_its_embed_dim(workdir, cli):
    (workdir / "t.yaml").write_text(SPEC.format(family="vit", grid="{embed_dim: [200], head_dim: [50]}"))
    assert cli("validate", "t.yaml").exit_code == 0  # 200 alone would fail with the default head_dim 64


# --- pretrained weights ------------------------------------------------------------------------

@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_pretrained_offline_fails_validation_in_one_line(workdir, cli, hf_cache):
    (workdir / "t.yaml").write_text(SPEC.format(family="vit", grid="{depth: 12, embed_dim: 192, pretrained: true}"))
    result = cli("validate", "t.yaml")
    err = result.stderr.strip()
    assert result.exit_code == 2 and len(err.splitlines()) == 1, result.output
    assert ("t.yaml: family.grid: pretrained weights timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k are not in the "
            f"local Hugging Face cache ({hf_cache})") in err
    assert "set pretrained: false" in err and "at vit[depth=12,embed_dim=192,pretrained=True]" in err
    assert not any(hf_cache.iterdir())  # nothing downloaded


def test_pretrained_weights_load_from_the_cache(hf_cache):
    """Cached weights of timm's vit_tiny_patch16_224 (random here) initialise a ViT for 8x8 grey digits."""
    import timm
    from safetensors.torch import save_file

    repo = hf_cache / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(1)
    reference = timm.create_model("vit_tiny_patch16_224")
    save_file(reference.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")

    model = create_model("vit", pretrained=True, depth=12, embed_dim=192, num_classes=10, in_chans=1, image_size=8,
                         patch_size=2)
    assert torch.equal(model.blocks[5].mlp.fc1.weight, reference.blocks[5].mlp.fc1.weight)
    assert model.patch_embed.proj.weight.shape == (192, 1, 2, 2) and model.pos_embed.shape == (1, 17, 192)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# --- `bench families` and a sweep through `bench run` ------------------------------------------

def test_families_command_lists_every_family_and_parameter(cli):
    from benchsuite.models import get_family, list_families

    rows = json.loads(cli("families", "--format", "json").stdout)
    for name in list_families():
        params = [r["parameter"] for r in rows if r["family"] == name]
        assert params == ["", *get_family(name).params.model_fields]
    vit = {r["parameter"]: r for r in rows if r["family"] == "vit"}
    assert vit["tokens"]["allowed"] == "all | cls | mean" and vit["tokens"]["default"] == "all"
    assert vit["patch_size"]["allowed"] == "int >= 1 or null" and vit["pretrained"]["default"] == "false"
    assert "vit" in cli("families", "v*").stdout
    missing = cli("families", "nope*")
    assert missing.exit_code == 2 and "no family matches 'nope*'; known: cifar_resnet" in missing.stderr


def test_vit_depth_sweep_end_to_end(workdir, cli):
    (workdir / "t.yaml").write_text(SPEC.format(family="vit", grid="{depth: [1, 2], embed_dim: 16, patch_size: 2}"))
    result = cli("run", "t.yaml")
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(f"duckdb:///{workdir / 'bench.duckdb'}", connect_args={"read_only": True},
                              poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        def q(sql):
            return [tuple(r) for r in conn.execute(sa.text(sql))]

        runs = dict(q("SELECT run_id, json_extract(params, '$.depth')::INT FROM runs WHERE status = 'complete'"))
        assert sorted(runs.values()) == [1, 2]
        for run, depth in runs.items():
            layers = q(f"SELECT name, stage, features FROM layers WHERE run_id = '{run}' ORDER BY layer")
            assert layers == [("stem", 0, 17 * 16)] + [(f"block{i}", 1, 17 * 16) for i in range(depth)]
            n = depth + 1
            heat = np.full((n, n), np.nan)
            for a, b, v in q(f"SELECT layer_a, layer_b, value FROM cka WHERE run_a = '{run}' AND run_b = '{run}'"):
                heat[a, b] = v
            assert np.allclose(np.diag(heat), 1) and np.allclose(heat, heat.T) and (heat > 0).all()
            pcs = [r[0] for r in q(f"SELECT pc1_fraction FROM pcs WHERE run_id = '{run}' ORDER BY layer")]
            assert len(pcs) == n and all(0 < p < 1 for p in pcs)
