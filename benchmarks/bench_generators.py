"""CNN generators: training and inference throughput, and `distort --subset cnn` beside traditional.

    python benchmarks/bench_generators.py [--n 800] [--workers 2] [--skip-distort]

1. Inference (patches/s, 64x64, CPU, float32): a small, a median and a large config,
   through generators.inference.run_generator (the fixed batch shape that makes replay
   exact), on one thread (what each build worker uses) and on all of torch's threads.
2. Training (patches/s, batch 16, 64x64, CPU): the same three configs, with the L1 term
   only, with a 2-layer discriminator (adversarial term), and with the VGG term. This
   machine has no VGG16 checkpoint; the VGG timing uses random weights in torchvision's
   layout, which costs exactly what the real weights cost.
3. Builds: `distort --subset traditional`, `--subset cnn` and `--subset mix` through the
   Python API, same n, seed and workers, in this run; the cnn bank is 4 median configs
   (one per upsampling method and normalization), trained for 2 steps (the rate does not
   depend on the weights). The target (issue 3): cnn at least a quarter of traditional on
   2 cores. Rates include starting the worker processes (each imports torch).

Configs (generator fields; see generators/config.py for the ranges):
  small:  layers 2, skips 1, c16/64,  first stride 1
  median: layers 3, skips 2, c32/256, first stride 1, dropout 1 (each field at the middle
          of its range; first stride 1, the costlier of the two)
  large:  layers 5, skips 5 + top, c64/512, first stride 1, dropout 2 (every field at its top)
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
    "small": dict(layers=2, skips=1, force_skip_top=False, dropout_layers=0, first_channels=16, max_channels=64),
    "median": dict(layers=3, skips=2, force_skip_top=False, dropout_layers=1, first_channels=32, max_channels=256),
    "large": dict(layers=5, skips=5, force_skip_top=True, dropout_layers=2, first_channels=64, max_channels=512),
}
METHODS = [("transposed", "batch"), ("nearest_conv", "instance"), ("bilinear_conv", "group"), ("pixel_shuffle", "none")]


def config(size, upsampling="nearest_conv", norm="batch", index=0, disc=0, vgg=0.0):
    c = sample_config(0, index)
    c["generator"] = {**SIZES[size], "upsampling": upsampling, "norm": norm, "first_stride": 1}
    c["corruption"] = {"kind": "pink_noise", "sigma_min": 0.02, "sigma_max": 0.2}
    c["discriminator"] = {"layers": disc}
    c["loss"] = {"l1_weight": 10.0, "vgg_weight": vgg, "adversarial_weight": 0.1 if disc else 0.0,
                 "learning_rate": 1e-3}
    return c


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


def make_median_bank(root: Path) -> Path:
    from generators.bank import Bank, sample_bank
    from generators.training import TrainSettings, train_bank

    bank = sample_bank(root / "bank", len(METHODS), 0)
    for i, (up, norm) in enumerate(METHODS):
        c = config("median", up, norm, index=i)
        c["name"] = bank.names[i]
        (bank.path / f"{bank.names[i]}.json").write_text(json.dumps(c))
    train_bank(bank.path, TrainSettings(steps=2, batch_size=4, device="cpu", no_vgg=True), progress=False,
               log=lambda m: None)
    assert len(Bank(bank.path).done_networks()) == len(METHODS)
    return bank.path


def bench_distort(n, workers, root: Path):
    from bapps_build import BuildConfig, run_build
    from generators.integration import distort_hooks

    bank = make_median_bank(root)
    results = {}
    for subset in ("traditional", "cnn", "mix"):
        hooks = extra = None
        families = None
        if subset != "traditional":
            hooks, extra, families = distort_hooks(bank, subset, None)
        cfg = BuildConfig(n=n, subset=subset, families=tuple(families) if families else None)
        t0 = time.perf_counter()
        report = run_build(cfg, root / f"ds-{subset}", workers=workers, progress=False, log=lambda m: None,
                           hooks=hooks, extra_settings=extra)
        results[subset] = (report["rate_per_second"], time.perf_counter() - t0)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800, help="examples per distort build")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-distort", action="store_true")
    args = ap.parse_args()

    print(f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}; "
          f"CUDA available: {torch.cuda.is_available()}")
    rows, threads = bench_inference(args.repeat)
    print(f"\n## inference, 64x64 patches/s (1 thread / {threads} threads), exact fixed-shape batches")
    for size, per_method in rows:
        parts = [f"{up} {r[1]:.0f}/{r[threads]:.0f}" for up, r, _ in per_method]
        print(f"{size:7s} ({per_method[0][2] / 1e6:.2f}M params): " + ", ".join(parts))
    print(f"\n## training, patches/s (batch 16, 64x64, {threads} threads)")
    for size, label, rate in bench_training(args.repeat):
        print(f"{size:7s} {label:32s} {rate:7.1f}")
    if not args.skip_distort:
        root = Path(tempfile.mkdtemp(prefix="bench-generators-"))
        try:
            results = bench_distort(args.n, args.workers, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        base = results["traditional"][0]
        print(f"\n## distort, n={args.n}, workers={args.workers} (examples/s, as report.json; wall seconds)")
        for subset, (rate, wall) in results.items():
            print(f"{subset:12s} {rate:7.1f} ex/s  {wall:6.1f} s  {rate / base:5.2f} x traditional")


if __name__ == "__main__":
    main()
