"""Per-family apply time at 64x64, beside albumentations 2.0.x and imagecorruptions.

    pip install 'albumentations==2.0.*' imagecorruptions 'setuptools<81'
    python benchmarks/bench_families.py [--repeat 5] [--calls 300]

For each family: microseconds per call of ours (sample + apply, float32 [0, 1], the
pipeline's own dtype) and of each peer's closest transform, called the way a user calls
it (albumentations: `t(image=x)` with p=1, on uint8 and on float32; imagecorruptions:
`corrupt(x, corruption_name=..., severity=3)` on uint8). The ratio is peer time / our
time: above 1 means we are faster. Every number is the median of --repeat runs of
--calls calls on different real 64x64 photo patches, measured in this same process.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import numpy as np

import distortions
from distortions.calibration import severity_to_strength

warnings.filterwarnings("ignore")


def patches(count=64, size=64):
    from skimage import data

    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    out = []
    for k in range(count):
        img = photos[k % len(photos)]
        y = int(rng.integers(0, img.shape[0] - size))
        x = int(rng.integers(0, img.shape[1] - size))
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def time_calls(fn, inputs, calls, repeat):
    """Median over repeats of the mean microseconds per call."""
    fn(inputs[0])  # warm up (imports, caches)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(inputs[i % len(inputs)])
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs)


def ours(name):
    fam = distortions.get_family(name)
    rng = np.random.default_rng(1)

    def call(img):
        # as builds sample: a uniform severity through the family's calibrated map
        return fam.apply(img, fam.sample(rng, severity_to_strength(name, float(rng.random()))))
    return call


def albumentations_peers():
    import albumentations as A

    return {
        "lightness_shift": A.RandomBrightnessContrast(brightness_limit=(-0.3, 0.3), contrast_limit=0, p=1),
        "color_shift": A.RGBShift(p=1),
        "contrast": A.RandomBrightnessContrast(brightness_limit=0, contrast_limit=(-0.8, 0.8), p=1),
        "saturation": A.HueSaturationValue(hue_shift_limit=0, sat_shift_limit=(-60, 60), val_shift_limit=0, p=1),
        "uniform_noise": A.AdditiveNoise(noise_type="uniform", spatial_mode="per_pixel",
                                         noise_params={"ranges": [(-0.2, 0.2)]}, p=1),
        "gaussian_noise": A.GaussNoise(std_range=(0.01, 0.22), per_channel=True, p=1),
        "gaussian_blur": A.GaussianBlur(sigma_limit=(0.4, 3.0), p=1),
        "shift": A.Affine(translate_px=(-6, 6), p=1),
        "affine_warp": A.Affine(rotate=(-10, 10), shear=(-10, 10), scale=(0.87, 1.15), p=1),
        "homography": A.Perspective(scale=(0.01, 0.1), p=1),
        "linear_warp": A.GridDistortion(num_steps=4, p=1),
        "cubic_warp": A.ElasticTransform(alpha=30, sigma=6, p=1),
        "chromatic_aberration": A.ChromaticAberration(mode="red_blue", p=1),
        "jpeg": A.ImageCompression(quality_range=(5, 90), p=1),
    }


IMAGECORRUPTIONS = {"gaussian_noise": "gaussian_noise", "gaussian_blur": "gaussian_blur",
                    "jpeg": "jpeg_compression", "contrast": "contrast", "lightness_shift": "brightness",
                    "saturation": "saturate"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args(argv)
    u8 = patches()
    f32 = [p.astype(np.float32) / 255.0 for p in u8]
    try:
        alb = albumentations_peers()
        import albumentations

        alb_version = albumentations.__version__
    except ImportError:
        alb, alb_version = {}, None
    try:
        from imagecorruptions import corrupt
    except ImportError:
        corrupt = None
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"albumentations {alb_version}, imagecorruptions {'yes' if corrupt else 'no'}")
    print(f"{'family':22s} {'ours us':>8s} {'alb u8':>8s} {'ratio':>6s} {'alb f32':>8s} {'ratio':>6s} "
          f"{'imgcorr':>8s} {'ratio':>6s}")
    slower = []
    for fam in distortions.all_families():
        t_ours = time_calls(ours(fam.name), f32, args.calls, args.repeat)
        cells = [f"{fam.name:22s} {t_ours:8.1f}"]
        t = alb.get(fam.name)
        if t is not None:
            t_u8 = time_calls(lambda x: t(image=x)["image"], u8, args.calls, args.repeat)
            t_f32 = time_calls(lambda x: t(image=x)["image"], f32, args.calls, args.repeat)
            cells.append(f"{t_u8:8.1f} {t_u8 / t_ours:6.2f} {t_f32:8.1f} {t_f32 / t_ours:6.2f}")
            if min(t_u8, t_f32) < t_ours:
                slower.append(f"{fam.name} (albumentations {min(t_u8, t_f32):.0f} us, ours {t_ours:.0f} us)")
        else:
            cells.append(f"{'-':>8s} {'':6s} {'-':>8s} {'':6s}")
        name = IMAGECORRUPTIONS.get(fam.name)
        if corrupt and name:
            calls = max(20, args.calls // 10)  # imagecorruptions is slow; fewer calls
            try:
                t_ic = time_calls(lambda x: corrupt(x, corruption_name=name, severity=3), u8, calls, args.repeat)
                cells.append(f"{t_ic:8.1f} {t_ic / t_ours:6.2f}")
            except Exception as exc:  # imagecorruptions 1.1.2 breaks on newer scikit-image
                cells.append(f"  broken ({type(exc).__name__})")
        else:
            cells.append(f"{'-':>8s}")
        print(" ".join(cells))
        sys.stdout.flush()
    print("# ratio = peer time / our time (above 1: ours is faster)")
    print("# shared families slower than albumentations' faster dtype: " + (", ".join(slower) or "none"))


if __name__ == "__main__":
    main()
