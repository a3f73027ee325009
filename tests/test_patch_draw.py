"""The one flat-patch retry loop (recipes.draw_least_flat), shared by `distort` and `real`."""
from bapps_build.config import BuildConfig
from bapps_build.patch_spec import PatchSpec
from bapps_build.real import RealConfig
from bapps_build.recipes import draw_least_flat


def _scripted(scores):
    """draw() that returns the given flatness scores in turn, with a box and payload per draw."""
    calls = []

    def draw():
        k = len(calls)
        calls.append(k)
        return scores[k], [k, 0, k + 10, 10], f"draw {k}"
    return draw, calls


def test_stops_at_the_first_patch_that_is_not_flat():
    draw, calls = _scripted([0.001, 0.004, 0.02, 0.5])
    drawn, crop = draw_least_flat(PatchSpec(patch_size=10, flat_threshold=0.015, max_flat_attempts=50), draw)
    assert drawn == "draw 2" and calls == [0, 1, 2]
    assert crop == {"box": [2, 0, 12, 10], "size": 10, "scale": 1.0, "attempts": 3}


def test_keeps_the_least_flat_after_the_last_attempt_and_says_so():
    draw, calls = _scripted([0.003, 0.009, 0.001, 0.002])
    spec = PatchSpec(patch_size=10, flat_threshold=0.015, max_flat_attempts=4, context_margin=2)
    drawn, crop = draw_least_flat(spec, draw)
    assert drawn == "draw 1" and calls == [0, 1, 2, 3]
    # the size is the patch and its context; the attempt is the one the kept patch came from
    assert crop == {"box": [1, 0, 11, 10], "size": 14, "scale": 1.4, "attempts": 2, "margin": 2,
                    "flat_fallback": True}
    assert list(crop) == ["box", "size", "scale", "attempts", "margin", "flat_fallback"]  # manifest bytes


def test_settings_give_their_patch_spec():
    cfg = BuildConfig(n=1, patch_size=32, scale_range=(0.25, 0.5), flat_threshold=0.02, max_flat_attempts=7)
    assert cfg.patch_spec == PatchSpec(32, (0.25, 0.5), 0.02, 7, cfg.context_margin)
    assert cfg.patch_spec.side == 32 + 2 * cfg.context_margin
    real = RealConfig(n=1, name="superres", patch_size=48)
    assert real.patch_spec == PatchSpec(48, (1.0, 1.0), real.flat_threshold, real.max_flat_attempts, 0)
    assert PatchSpec() == BuildConfig(n=1, context_margin=0).patch_spec  # one set of defaults
