"""CNN generators: training and inference throughput, and `distort --subset cnn` beside traditional.

    python benchmarks/bench_generators.py [--n 800] [--workers 2] [--distort-only | --skip-distort]

Configs. Costs multiply (depth, channels, first stride), so a config with every field at the
middle of its range is not a typical one: it costs more than 80% of the configs the
default ranges draw. So:
  small:     the cheapest the ranges allow: layers 2, no skips, c16/64, first stride 2
  median:    the config of median cost (multiply-accumulates on a 64x64 patch) among the
             first 300 configs of seed 0: what a sampled bank's typical network costs
  mid-range: every field at the middle of its range: layers 3, skips 2, c32/256, first
             stride 1, dropout 1 (reported as the pessimistic reading of "median")
  large:     every field at its top: layers 5, skips 5 + top, c64/512, first stride 1

1. Inference (patches/s, 64x64, CPU, float32) through generators.inference.run_generator
   (the fixed batch shape that makes replay exact), on one thread (what each build worker
   uses) and on all of torch's threads; each config with each upsampling method.
2. Training (patches/s, batch 16, 64x64, CPU): L1 only, with a 2-layer discriminator
   (adversarial term), and with the VGG term. This machine has no VGG16 checkpoint: the VGG
   timing uses random weights in torchvision's layout (the same cost as the real ones).
3. Builds: `distort --subset traditional`, `--subset cnn` and `--subset mix` through the
   Python API, same n, seed and workers, in this run. cnn banks: the 4 sampled configs
   closest to the median cost (the target: cnn at least a quarter of
   traditional on 2 cores), and the mid-range config with each upsampling method. Each is
   trained for 2 steps (the rate does not depend on the weights). Rates are report.json's:
   they include starting the worker processes (each imports torch, about 1.5 s).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from generators.config import sample_config  # noqa: E402

SIZES = {
    "small": dict(layers=2, skips=0, force_skip_top=False, dropout_layers=0, first_channels=16, max_channels=64,
                  first_stride=2),
    "median": None,  # filled by median_cost_configs()
    "mid-range": dict(layers=3, skips=2, force_skip_top=False, dropout_layers=1, first_channels=32,
                      max_channels=256, first_stride=1),
    "large": dict(layers=5, skips=5, force_skip_top=True, dropout_layers=2, first_channels=64, max_channels=512,
                  first_stride=1),
}
METHODS = [("transposed", "batch"), ("nearest_conv", "instance"), ("bilinear_conv", "group"), ("pixel_shuffle", "none")]


def config(size, upsampling=None, norm=None, index=0, disc=0, vgg=0.0):
    """A config of the given size; upsampling and norm default to the size's own (else nearest_conv, batch)."""
    c = sample_config(0, index)
    fields = SIZES[size]
    c["generator"] = {**fields, "upsampling": upsampling or fields.get("upsampling", "nearest_conv"),
                      "norm": norm or fields.get("norm", "batch")}
    c["corruption"] = {"kind": "pink_noise", "sigma_min": 0.02, "sigma_max": 0.2}
    c["discriminator"] = {"layers": disc}
    c["loss"] = {"l1_weight": 10.0, "vgg_weight": vgg, "adversarial_weight": 0.1 if disc else 0.0,
                 "learning_rate": 1e-3}
    return c


def multiply_accumulates(c, size=64) -> int:
    """Multiply-accumulates of one forward pass on a size x size patch (convolutions only)."""
    from generators.networks import Generator

    model, total = Generator(c).eval(), [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += inp[0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return total[0]


def median_cost_configs(count=4, pool=300):
    """The configs of seed 0 closest to the median cost, and the cost distribution."""
    from generators.config import sample_bank_configs

    configs = sample_bank_configs(0, pool)
    costs = np.array([multiply_accumulates(c) for c in configs])
    median = float(np.median(costs))
    order = np.argsort(np.abs(costs - median), kind="stable")[:count]
    return [configs[i] for i in order], costs


def median_time(fn, repeat):
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def bench_inference(repeat):
    from generators.inference import prepare_model, run_generator
    from generators.networks import Generator, count_parameters

    rng = np.random.default_rng(0)
    images = [rng.random((64, 64, 3), dtype=np.float32) for _ in range(64)]
    rows = []
    threads = torch.get_num_threads()
    for size in SIZES:
        per_method = []
        for up, norm in METHODS:
            if size == "median":
                norm = SIZES["median"]["norm"]
            torch.manual_seed(0)
            model = prepare_model(Generator(config(size, up, norm)), "cpu")
            rates = {}
            for t in (1, threads):
                torch.set_num_threads(t)
                rates[t] = len(images) / median_time(lambda: run_generator(model, images), repeat)
            torch.set_num_threads(threads)
            per_method.append((up, rates, count_parameters(model)))
        rows.append((size, per_method))
    return rows, threads


def bench_training(repeat, steps=3):
    from generators.discriminator import build_discriminator
    from generators.networks import Generator
    from generators.vgg import VGG16Features, perceptual_loss

    F = torch.nn.functional
    vgg = VGG16Features()  # random weights: timing only
    x = torch.rand(16, 3, 64, 64)
    y = torch.rand(16, 3, 64, 64)
    rows = []
    for size in SIZES:
        for label, disc, use_vgg in (("L1", 0, False), ("L1 + adversarial (D 2 layers)", 2, False),
                                     ("L1 + VGG", 0, True)):
            torch.manual_seed(0)
            c = config(size, disc=disc, vgg=1.0 if use_vgg else 0.0)
            gen = Generator(c).train()
            d = build_discriminator(c)
            opt = torch.optim.Adam(gen.parameters(), 1e-3, betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(d.parameters(), 1e-3, betas=(0.5, 0.999)) if d is not None else None

            def run():
                for _ in range(steps):
                    out = gen(x)
                    loss = 10 * F.l1_loss(out, y)
                    if d is not None:
                        real, fake = d(x, y), d(x, out.detach())
                        dl = F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))
                        opt_d.zero_grad()
                        dl.backward()
                        opt_d.step()
                        score = d(x, out)
                        loss = loss + 0.1 * F.mse_loss(score, torch.ones_like(score))
                    if use_vgg:
                        loss = loss + perceptual_loss(vgg, out, y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            seconds = median_time(run, repeat)
            rows.append((size, label, steps * 16 / seconds))
    return rows


def make_bank(root: Path, configs) -> Path:
    from generators.bank import Bank, sample_bank
    from generators.training import TrainSettings, train_bank

    bank = sample_bank(root, len(configs), 0)
    for name, c in zip(bank.names, configs):
        c = dict(c, name=name, loss={**c["loss"], "vgg_weight": 0.0})
        (bank.path / f"{name}.json").write_text(json.dumps(c))
    train_bank(bank.path, TrainSettings(steps=2, batch_size=4, device="cpu", no_vgg=True), progress=False,
               log=lambda m: None)
    assert len(Bank(bank.path).done_networks()) == len(configs)
    return bank.path


def bench_distort(n, workers, root: Path):
    from bapps_build import BuildConfig, run_build
    from generators.integration import distort_hooks

    median_bank = make_bank(root / "median-bank", median_cost_configs()[0])
    mid_bank = make_bank(root / "mid-bank", [config("mid-range", up, norm, index=i)
                                             for i, (up, norm) in enumerate(METHODS)])
    results = {}
    for label, subset, bank in (("traditional", "traditional", None), ("cnn (median-cost bank)", "cnn", median_bank),
                                ("mix (median-cost bank)", "mix", median_bank),
                                ("cnn (mid-range bank)", "cnn", mid_bank)):
        hooks = extra = None
        families = None
        if subset != "traditional":
            hooks, extra, families = distort_hooks(bank, subset, None)
        cfg = BuildConfig(n=n, subset=subset, families=tuple(families) if families else None)
        t0 = time.perf_counter()
        report = run_build(cfg, root / f"ds-{len(results)}", workers=workers, progress=False, log=lambda m: None,
                           hooks=hooks, extra_settings=extra)
        results[label] = (report["rate_per_second"], time.perf_counter() - t0)
    return results


def _set_median_fields():
    c = median_cost_configs(count=1)[0][0]
    SIZES["median"] = dict(c["generator"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800, help="examples per distort build")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-distort", action="store_true")
    ap.add_argument("--distort-only", action="store_true", help="only the distort comparison")
    args = ap.parse_args()

    print(f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}; "
          f"CUDA available: {torch.cuda.is_available()}")
    _set_median_fields()
    for _ in range(0 if args.distort_only else 1):
        throughput(args.repeat)
    if not args.skip_distort:
        distort_comparison(args.n, args.workers)


def throughput(repeat):
    from generators.config import summarize_config

    medians, costs = median_cost_configs(count=1)
    print(f"\nconfig cost over 300 sampled configs (MMAC per 64x64 patch): p10 {np.percentile(costs, 10) / 1e6:.0f}, "
          f"median {np.median(costs) / 1e6:.0f}, mean {costs.mean() / 1e6:.0f}, p90 {np.percentile(costs, 90) / 1e6:.0f}, "
          f"max {costs.max() / 1e6:.0f}")
    for size in SIZES:
        c = medians[0] if size == "median" else config(size)
        print(f"  {size:9s} {multiply_accumulates(c) / 1e6:6.0f} MMAC  {summarize_config(c)}")
    rows, threads = bench_inference(repeat)
    print(f"\n## inference, 64x64 patches/s (1 thread / {threads} threads), exact fixed-shape batches")
    for size, per_method in rows:
        parts = [f"{up} {r[1]:.0f}/{r[threads]:.0f}" for up, r, _ in per_method]
        print(f"{size:7s} ({per_method[0][2] / 1e6:.2f}M params): " + ", ".join(parts))
    print(f"\n## training, patches/s (batch 16, 64x64, {threads} threads)")
    for size, label, rate in bench_training(repeat):
        print(f"{size:7s} {label:32s} {rate:7.1f}")


def distort_comparison(n, workers):
    root = Path(tempfile.mkdtemp(prefix="bench-generators-"))
    try:
        results = bench_distort(n, workers, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = results["traditional"][0]
    print(f"\n## distort, n={n}, workers={workers} (examples/s, as report.json; wall seconds)")
    for subset, (rate, wall) in results.items():
        print(f"{subset:24s} {rate:7.1f} ex/s  {wall:6.1f} s  {rate / base:5.2f} x traditional")


if __name__ == "__main__":
    main()
