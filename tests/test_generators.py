"""Generators: the config space, the networks each config field builds, corruptions, VGG16."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F_instance_norm = torch.nn.functional.instance_norm

import distortions  # noqa: E402
from generators.config import (CORRUPTIONS, DEFAULT_RANGES, NORMS, UPSAMPLING, ConfigError, channels_at,  # noqa: E402
                               sample_bank_configs, sample_config, skip_levels, summarize_config,
                               validate_config)


def make_config(**gen):
    """A small valid config whose generator fields are the given ones."""
    c = sample_config(0, 0)
    c["generator"] = {"layers": 3, "skips": 0, "force_skip_top": False, "dropout_layers": 0,
                      "upsampling": "nearest_conv", "norm": "batch", "first_stride": 1, "first_channels": 8,
                      "max_channels": 64, **gen}
    c["corruption"] = {"kind": "null"}
    c["discriminator"] = {"layers": 0}
    c["loss"] = {"l1_weight": 1.0, "vgg_weight": 0.0, "adversarial_weight": 0.0, "learning_rate": 1e-3}
    validate_config(c)
    return c


def build(**gen):
    from generators.networks import Generator

    return Generator(make_config(**gen))


def modules_of(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def count_concatenations(model, x, monkeypatch):
    calls = []
    real_cat = torch.cat

    def counting_cat(tensors, dim=0):
        calls.append([t.shape[1] for t in tensors])
        return real_cat(tensors, dim=dim)

    monkeypatch.setattr(torch, "cat", counting_cat)
    with torch.no_grad():
        model.eval()(x)
    monkeypatch.setattr(torch, "cat", real_cat)
    return calls


# ------------------------------------------------------------------ the config space


def test_same_seed_same_bank_and_prefix_property():
    a = sample_bank_configs(7, 12)
    assert a == sample_bank_configs(7, 12)
    assert a[:5] == sample_bank_configs(7, 5)  # network i depends on (seed, i) only
    assert a != sample_bank_configs(8, 12)
    assert [c["name"] for c in a] == [f"net-{i:03d}" for i in range(12)]
    assert len({c["seed"] for c in a}) == 12


def test_sampled_configs_stay_in_the_documented_ranges_and_cover_them():
    configs = sample_bank_configs(0, 400)
    seen = {k: set() for k in ("kind", "upsampling", "norm", "first_stride", "first_channels", "max_channels",
                               "layers", "dlayers", "force")}
    g_r, l_r = DEFAULT_RANGES["generator"], DEFAULT_RANGES["loss"]
    for c in configs:
        validate_config(c)
        json.dumps(c)
        g, lo = c["generator"], c["loss"]
        assert g_r["layers"][0] <= g["layers"] <= g_r["layers"][1]
        assert g["layers"] + (g["first_stride"] == 2) <= 5
        assert 0 <= g["skips"] <= g["layers"] and 0 <= g["dropout_layers"] <= min(2, g["layers"])
        assert g["first_channels"] in g_r["first_channels"] and g["max_channels"] >= g["first_channels"]
        assert l_r["l1_weight"][0] <= lo["l1_weight"] <= l_r["l1_weight"][1]
        assert lo["vgg_weight"] == 0 or l_r["vgg_weight"][0] <= lo["vgg_weight"] <= l_r["vgg_weight"][1]
        assert (lo["adversarial_weight"] == 0) == (c["discriminator"]["layers"] == 0)
        assert l_r["learning_rate"][0] <= lo["learning_rate"] <= l_r["learning_rate"][1]
        if c["corruption"]["kind"] == "downsample":
            assert c["corruption"]["factor"] in (2, 4)
        for key, value in (("kind", c["corruption"]["kind"]), ("upsampling", g["upsampling"]), ("norm", g["norm"]),
                           ("first_stride", g["first_stride"]), ("first_channels", g["first_channels"]),
                           ("max_channels", g["max_channels"]), ("layers", g["layers"]),
                           ("dlayers", c["discriminator"]["layers"]), ("force", g["force_skip_top"])):
            seen[key].add(value)
    assert seen["kind"] == set(CORRUPTIONS) and seen["upsampling"] == set(UPSAMPLING) and seen["norm"] == set(NORMS)
    assert seen["first_stride"] == {1, 2} and seen["layers"] == {2, 3, 4, 5} and seen["dlayers"] == {0, 1, 2, 3}
    assert seen["force"] == {False, True} and seen["first_channels"] == {16, 32, 48, 64}
    assert {64, 128, 256, 512} <= seen["max_channels"]
    assert 0.3 < np.mean([c["loss"]["vgg_weight"] == 0 for c in configs]) < 0.7


def test_validate_names_the_field():
    c = make_config()
    c["generator"]["upsampling"] = "deconv"
    with pytest.raises(ConfigError, match="upsampling"):
        validate_config(c)
    c = make_config()
    c["generator"]["skips"] = 9
    with pytest.raises(ConfigError, match="skips"):
        validate_config(c)


# ------------------------------------------------------------------ each field changes the network


@pytest.mark.parametrize("layers,first_stride", [(2, 1), (3, 2), (4, 1), (5, 1)])
def test_layers_and_first_stride_set_the_strides(layers, first_stride):
    model = build(layers=layers, first_stride=first_stride)
    convs = modules_of(model, nn.Conv2d)
    assert model.first[0].stride == (first_stride, first_stride)
    strided = [c for c in convs if c.stride == (2, 2) and c is not model.first[0]]
    assert len(strided) == layers  # the down stages
    ups = modules_of(model, nn.Upsample)
    assert len(ups) == layers + (first_stride == 2)  # one per up stage, and one more for the first stride
    for size in ((64, 64), (37, 50), (16, 16)):  # any size, padded inside and cropped back
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            y = model.eval()(x)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.parametrize("method,present", [("transposed", nn.ConvTranspose2d), ("nearest_conv", nn.Upsample),
                                            ("bilinear_conv", nn.Upsample), ("pixel_shuffle", nn.PixelShuffle)])
def test_upsampling_method_sets_the_layer_types(method, present):
    model = build(layers=3, first_stride=2, upsampling=method)
    kinds = {nn.ConvTranspose2d, nn.Upsample, nn.PixelShuffle}
    assert len(modules_of(model, present)) == 4  # 3 up stages + the last layer (first stride 2)
    for other in kinds - {present}:
        assert not modules_of(model, other)
    if method in ("nearest_conv", "bilinear_conv"):
        assert {m.mode for m in modules_of(model, nn.Upsample)} == {method.split("_")[0]}
    if method == "transposed":  # kernel 3, stride 2: the uneven overlap behind checkerboards
        assert all(m.kernel_size == (3, 3) and m.stride == (2, 2) for m in modules_of(model, nn.ConvTranspose2d))


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm2d), ("instance", nn.GroupNorm),
                                       ("group", nn.GroupNorm), ("none", None)])
def test_normalization_sets_the_layers(norm, kind):
    model = build(layers=3, norm=norm)
    all_kinds = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
    for k in all_kinds:
        expected = 6 if k is kind else 0  # 3 down + 3 up stages
        assert len(modules_of(model, k)) == expected
    stage_convs = [m for m in modules_of(model, nn.Conv2d) if m is not model.first[0] and m is not model.last]
    assert all((c.bias is not None) == (norm == "none") for c in stage_convs)
    if norm == "group":
        assert all(m.num_groups == 8 for m in modules_of(model, nn.GroupNorm))
    if norm == "instance":  # one group per channel: instance normalization
        norms = modules_of(model, nn.GroupNorm)
        assert all(m.num_groups == m.num_channels and m.affine for m in norms)
        x = torch.randn(3, norms[0].num_channels, 16, 16)
        with torch.no_grad():
            norms[0].weight.uniform_(0.5, 2)
            norms[0].bias.uniform_(-1, 1)
            expected = F_instance_norm(x, weight=norms[0].weight, bias=norms[0].bias, eps=norms[0].eps)
            assert torch.allclose(norms[0](x), expected, atol=1e-5)


@pytest.mark.parametrize("layers,skips,force", [(3, 0, False), (3, 0, True), (3, 1, False), (3, 2, True),
                                                (4, 4, False), (4, 4, True), (2, 1, True)])
def test_skip_connections_count_and_place(layers, skips, force, monkeypatch):
    config = make_config(layers=layers, skips=skips, force_skip_top=force)
    from generators.networks import Generator

    model = Generator(config)
    calls = count_concatenations(model, torch.rand(1, 3, 64, 64), monkeypatch)
    levels = skip_levels(config)
    assert len(calls) == len(levels)
    expected = set(range(layers - skips, layers)) | ({0} if force else set())
    assert set(levels) == expected
    # each concatenation joins two tensors of the level's channels
    assert sorted(c[0] for c in calls) == sorted(channels_at(config, lv) for lv in levels)
    top = model.last
    assert top.in_channels == channels_at(config, 0) * (2 if 0 in levels else 1)


def test_force_skip_top_adds_the_highest_level_only():
    assert skip_levels(make_config(layers=4, skips=1, force_skip_top=False)) == [3]
    assert skip_levels(make_config(layers=4, skips=1, force_skip_top=True)) == [0, 3]
    assert skip_levels(make_config(layers=4, skips=4, force_skip_top=True)) == [0, 1, 2, 3]


@pytest.mark.parametrize("dropout_layers", [0, 1, 2])
def test_dropout_layers(dropout_layers):
    model = build(layers=3, dropout_layers=dropout_layers)
    drops = modules_of(model, nn.Dropout)
    assert len(drops) == dropout_layers and all(d.p == 0.5 for d in drops)
    # on the deepest up stages (model.up is deepest first)
    with_dropout = [any(isinstance(m, nn.Dropout) for m in stage.modules()) for stage in model.up]
    assert with_dropout == [True] * dropout_layers + [False] * (3 - dropout_layers)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # eval: dropout off, the output is a function of the input
        assert torch.equal(model.eval()(x), model(x))


@pytest.mark.parametrize("first,cap", [(16, 64), (32, 512), (48, 128), (64, 64)])
def test_channel_counts(first, cap):
    model = build(layers=4, first_channels=first, max_channels=cap)
    assert model.first[0].out_channels == first
    outs = [b[0].out_channels for b in model.down]
    assert outs == [min(first * 2 ** i, cap) for i in range(1, 5)]
    assert max(m.out_channels for m in modules_of(model, nn.Conv2d)) == min(first * 16, cap)


def test_discriminator_layers():
    from generators.discriminator import PatchDiscriminator, build_discriminator

    for layers in (1, 2, 3):
        d = PatchDiscriminator(layers)
        strided = [m for m in modules_of(d, nn.Conv2d) if m.stride == (2, 2)]
        assert len(strided) == layers
        out = d(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
        assert out.shape[:2] == (2, 1) and out.shape[-1] == 64 // 2 ** layers - 1
    c = make_config()
    assert build_discriminator(c) is None
    c["discriminator"]["layers"] = 2
    assert isinstance(build_discriminator(c), PatchDiscriminator)


def test_summary_names_the_config():
    c = make_config(layers=4, skips=2, force_skip_top=True, upsampling="pixel_shuffle", norm="group",
                    first_stride=2, first_channels=16, max_channels=128)
    c["corruption"] = {"kind": "downsample", "factor": 4}
    text = summarize_config(c)
    for part in ("net-000", "sr4", "L4", "s3T", "pshuf", "grou", "c16/128", "st2"):
        assert part in text


# ------------------------------------------------------------------ corruptions


def test_corruptions():
    from generators.corruptions import apply_corruption, sample_corruption

    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3), dtype=np.float32)
    assert np.array_equal(apply_corruption(img, {"kind": "null"}), img)
    # the noise kinds are the traditional families with the same params
    p = sample_corruption({"kind": "pink_noise", "sigma_min": 0.02, "sigma_max": 0.2}, rng, 0.5)
    assert p["sigma"] == pytest.approx(0.11)
    fam = distortions.get_family("pink_noise").apply(img, {"sigma": p["sigma"], "beta": 1.0, "seed": p["seed"]})
    assert np.array_equal(apply_corruption(img, p), fam)
    w = sample_corruption({"kind": "white_noise", "sigma_min": 0.02, "sigma_max": 0.2}, rng, 1.0)
    assert w["sigma"] == pytest.approx(0.2)
    assert np.array_equal(apply_corruption(img, w),
                          distortions.get_family("gaussian_noise").apply(img, {"sigma": 0.2, "seed": w["seed"]}))
    gray = apply_corruption(img, {"kind": "color_removal"})
    assert np.abs(gray[..., 0] - gray[..., 1]).max() < 0.02 and np.abs(gray[..., 1] - gray[..., 2]).max() < 0.02
    for factor in (2, 4):
        low = apply_corruption(img, {"kind": "downsample", "factor": factor})
        assert low.shape == img.shape and low.dtype == np.float32
        # the high frequencies of white noise are gone: neighbours become alike
        assert np.abs(np.diff(low, axis=1)).mean() < 0.6 * np.abs(np.diff(img, axis=1)).mean()
    d4 = apply_corruption(img, {"kind": "downsample", "factor": 4})
    d2 = apply_corruption(img, {"kind": "downsample", "factor": 2})
    assert np.abs(np.diff(d4, axis=1)).mean() < np.abs(np.diff(d2, axis=1)).mean()


# ------------------------------------------------------------------ VGG16 in torchvision's format

TORCHVISION_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def write_vgg_checkpoint(path, last_conv=14, seed=0, shapes_ok=True):
    """A torchvision-format VGG16 state dict, cut after features.{last_conv}, random weights."""
    from generators.vgg import VGG16_LAYOUT

    g = torch.Generator().manual_seed(seed)
    state, in_ch, idx = {}, 3, 0
    for item in VGG16_LAYOUT:
        if item == "M":
            idx += 1
            continue
        if idx > last_conv:
            break
        state[f"features.{idx}.weight"] = torch.randn(item, in_ch, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(item, generator=g) * 0.01
        in_ch, idx = item, idx + 2
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's head: ignored
    if not shapes_ok:
        state["features.5.weight"] = torch.zeros(128, 3, 3, 3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_vgg_layout_has_torchvisions_keys():
    from generators.vgg import VGG16Features

    full = VGG16Features(taps=("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"))
    keys = [f"features.{k}" for k in full.features.state_dict()]
    assert keys == [f"features.{i}.{p}" for i in TORCHVISION_VGG16_CONVS for p in ("weight", "bias")]
    shapes = [tuple(v.shape) for k, v in full.features.state_dict().items() if k.endswith("weight")]
    assert shapes[0] == (64, 3, 3, 3) and shapes[-1] == (512, 512, 3, 3) and len(shapes) == 13
    loss_net = VGG16Features()  # relu3_3: the first 7 convs only
    assert len(loss_net.features.state_dict()) == 14


def test_vgg_loads_a_torchvision_format_checkpoint(tmp_path, monkeypatch):
    from generators.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG16_FILE, load_vgg16_features

    path = tmp_path / "weights.pth"
    state = write_vgg_checkpoint(path)
    model = load_vgg16_features(str(path))
    assert torch.equal(model.features[14].weight, state["features.14.weight"])
    x = torch.rand(1, 3, 32, 32)
    xn = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    F = torch.nn.functional
    h = F.relu(F.conv2d(xn, state["features.0.weight"], state["features.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, state["features.2.weight"], state["features.2.bias"], padding=1))
    with torch.no_grad():
        assert torch.allclose(model(x)["relu1_2"], h, atol=1e-6)
    # the torch.hub cache path: $TORCH_HOME/hub/checkpoints/vgg16-397923af.pth
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    write_vgg_checkpoint(tmp_path / "th" / "hub" / "checkpoints" / VGG16_FILE, seed=1)
    cached = load_vgg16_features()
    assert not torch.equal(cached.features[0].weight, model.features[0].weight)


def test_vgg_refuses_a_short_or_misshapen_checkpoint(tmp_path):
    from generators.vgg import VGGWeightsInvalid, load_vgg16_features

    write_vgg_checkpoint(tmp_path / "short.pth", last_conv=12)
    with pytest.raises(VGGWeightsInvalid, match="features.14.weight"):
        load_vgg16_features(str(tmp_path / "short.pth"))
    write_vgg_checkpoint(tmp_path / "bad.pth", shapes_ok=False)
    with pytest.raises(VGGWeightsInvalid, match="features.5.weight"):
        load_vgg16_features(str(tmp_path / "bad.pth"))


def test_vgg_missing_names_the_file_and_url(tmp_path, monkeypatch):
    from generators.vgg import VGGWeightsMissing, load_vgg16_features

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(VGGWeightsMissing) as info:
        load_vgg16_features()
    text = str(info.value)
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "vgg16-397923af.pth") in text
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in text and "--no-vgg" in text


# ------------------------------------------------------------------ torch stays optional


def test_pipeline_imports_do_not_import_torch():
    code = ("import sys, bapps_build, bapps_build.cli, distortions, generators, generators.cli, generators.config, "
            "generators.bank, generators.corruptions; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_message():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from generators._torch import require_torch, TorchMissing\n"
            "try:\n    require_torch()\nexcept TorchMissing as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "pip install 'bapps-build[cnn]'" in out and "torch>=2.1" in out
