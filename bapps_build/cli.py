"""The `bapps-build` command line: a thin layer over the Python API."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

import distortions

from . import __version__
from .build import format_report, run_build
from .cli_aliases import RenamedOption
from .cli_errors import friendly_errors, traceback_option
from .config import BuildConfig
from .replay import replay_example
from .subsets import resolve_subset, subset_rel

SUBSET_HELP = "Which subset: its NAME when unique in DATASET (e.g. traditional), or TASK/SPLIT/SUBSET."


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, type=click.Path(exists=True, dir_okay=False),
    help="A Python file that defines extra distortion families (repeatable).")


def echo(text: str, err: bool = False) -> None:
    """click.echo that never fails on a name the terminal's encoding cannot show (a file name with
    undecodable bytes, an ASCII-only terminal): such characters are printed as escapes."""
    import sys

    stream = sys.stderr if err else sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    click.echo(text.encode(encoding, "backslashreplace").decode(encoding, "replace"), err=err)


def load_plugins(plugins):
    for p in plugins:
        distortions.load_plugin_file(p)


def split_names(values):
    """--families a,b --families c -> [a, b, c]"""
    out = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out or None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bapps-build")
@traceback_option
def main():
    """Build BAPPS-style perceptual-similarity datasets for LPIPS.

    \b
    Start with:
      bapps-build distort --n 1000 --out dataset     # 2AFC triplets from the sample photos
      bapps-build preview dataset --out sheet.png    # look at them
      bapps-build verify dataset                     # check what the LPIPS loader will see
    """


# ---------------------------------------------------------------- distort


executor_option = click.option(
    "--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
    help="local: a process pool on this machine. dask: dask.distributed (a LocalCluster, or --scheduler).")
scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDRESS",
    help="Dask scheduler to use with --executor dask, e.g. tcp://head-node:8786.")


def distort_options(fn):
    options = [
        click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of examples."),
        click.option("--out", type=click.Path(file_okay=False), default="dataset", show_default=True,
                     help="Dataset root; the subset goes to OUT/<task>/<split>/<subset>/."),
        click.option("--task", type=click.Choice(["2afc", "jnd"]), default="2afc", show_default=True,
                     help="2afc: ref, p0, p1 triplets. jnd: p0 = reference, p1 = its distorted version."),
        click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True,
                     help="Which source images to draw from (each image belongs to one split by its hash)."),
        click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
                     help="Share of source images that belong to val (0: all train, 1: all val)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Root seed; example i depends only on (seed, i)."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Processes to use [default: all cores]. The output does not depend on it."),
        click.option("--sources", multiple=True,
                     help="Folder (recursive), glob pattern or text file of paths (repeatable). "
                          "Default: the color photographs bundled with scikit-image."),
        click.option("--resume", is_flag=True, help="Finish an interrupted build in OUT (same settings)."),
        click.option("--patch-size", type=click.IntRange(16, 4096), default=64, show_default=True),
        click.option("--scale-range", type=(float, float), default=(0.5, 1.0), show_default=True,
                     help="Random rescale of the source before cropping, MIN MAX (log-uniform)."),
        click.option("--flat-threshold", type=float, default=0.015, show_default=True,
                     help="Reject patches whose gray-level std (on [0, 1]) is below this."),
        click.option("--max-chain", type=click.IntRange(1, 20), default=None,
                     help="Each distorted patch gets a chain of 1..MAX families [default: 2 for "
                          "2afc, 1 for jnd]."),
        click.option("--families", "families", multiple=True,
                     help="Restrict to these families, comma-separated (see `bapps-build families`)."),
        click.option("--severity-range", type=(float, float), default=None,
                     help="Draw severities uniformly in MIN MAX (within [0, 1]). Default: 0 1 for "
                          "2afc; for jnd, 0.08 u^2, one family (concentrated at the visibility threshold)."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=200_000_000, show_default=True,
                     help="Refuse source images with more pixels (decompression-bomb guard)."),
        click.option("--format", "fmt", type=click.Choice(["bapps", "webdataset"]), default="bapps",
                     show_default=True,
                     help="bapps: a tree of PNG files the LPIPS trainer reads; webdataset: tar shards "
                          "written directly (see `bapps-build export`)."),
        click.option("--maxcount", type=click.IntRange(min=1), default=2000, show_default=True,
                     help="Examples per shard with --format webdataset."),
        executor_option,
        scheduler_option,
        click.option("--quiet", is_flag=True, help="No progress bar."),
        plugin_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


bank_option = click.option(
    "--bank", "bank", cls=RenamedOption, old=["--generators"], type=click.Path(exists=True, file_okay=False),
    default=None, help="A trained generator bank (`bapps-build generators train`): enables the cnn family.")


def load_bank(bank, device="cpu"):
    """Register the `cnn` family of a trained bank (needs the cnn extra: torch)."""
    from generators.integration import register_bank

    return register_bank(bank, device=device)


@main.command()
@distort_options
@click.option("--subset", type=click.Choice(["traditional", "cnn", "mix"]), default="traditional",
              show_default=True,
              help="traditional: the 20 families. cnn: a generator bank's networks (needs --bank). "
                   "mix: p0 and p1 each drawn from traditional and cnn together.")
@bank_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the cnn family's networks run (cpu replays bit-exactly).")
@friendly_errors
def distort(n, out, task, split, val_fraction, seed, workers, sources, resume, patch_size, scale_range,
            flat_threshold, max_chain, families, severity_range, max_pixels, fmt, maxcount, executor, scheduler,
            quiet, plugins, subset, bank, device):
    """Make N triplets (or JND pairs) with the traditional distortions.

    \b
    Writes OUT/2afc/<split>/<subset>/{ref,p0,p1}/NNNNNN.png (jnd: {p0,p1}) and, beside
    them, manifest.jsonl (one replayable recipe per example), report.json and build.json.

    \b
    Examples:
      bapps-build distort --n 1000 --out dataset
      bapps-build distort --n 5000 --split val --sources ~/photos --out dataset
      bapps-build distort --n 4800 --task jnd --split val --families gaussian_blur,jpeg
      bapps-build distort --n 160000 --format webdataset --out shards
      bapps-build distort --n 160000 --executor dask --scheduler tcp://head:8786 --out /shared/ds
    """
    load_plugins(plugins)
    family_list = split_names(families)
    hooks, extra = None, None
    if subset != "traditional":
        if not bank:
            raise click.UsageError(f"--subset {subset} needs --bank BANK (a trained generator bank; "
                                   "see `bapps-build generators --help`)")
        from generators.integration import distort_hooks

        hooks, extra, family_list = distort_hooks(bank, subset, family_list, device=device)
    cfg = BuildConfig(n=n, task=task, split=split, subset=subset, seed=seed, patch_size=patch_size,
                      scale_range=tuple(scale_range), flat_threshold=flat_threshold, max_chain=max_chain,
                      families=tuple(family_list) if family_list else None,
                      severity_range=tuple(severity_range) if severity_range else None,
                      val_fraction=val_fraction,
                      sources=tuple(sources), max_pixels=max_pixels, plugins=tuple(plugins),
                      format=fmt, maxcount=maxcount)
    report = run_build(cfg, out, workers=workers, resume=resume, progress=not quiet,
                       log=lambda m: echo(m, err=True), hooks=hooks, extra_settings=extra,
                       executor=executor, scheduler=scheduler)
    echo(format_report(report))


# ---------------------------------------------------------------- apply


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--chain", "spec", required=True,
              help="name[:severity][+name[:severity]...], or name:key=value,key=value.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output image (.png, .jpg, ...).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed for what the spec leaves random [default: random, printed].")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Also write the chain (family, severity, params) as JSON here.")
@plugin_option
@bank_option
@friendly_errors
def apply(image, spec, out, seed, record, plugins, bank):
    """Apply a chain of distortions to any image.

    \b
    Examples:
      bapps-build apply photo.jpg --chain gaussian_blur:0.5+jpeg:0.8 --out out.png
      bapps-build apply photo.jpg --chain jpeg:quality=10 --out out.png
      bapps-build apply photo.jpg --chain pink_noise --seed 3 --out out.png
      bapps-build apply photo.jpg --chain cnn --bank bank --out out.png
    """
    from .files import encode_photo_png
    from .sources import read_source, to_float

    load_plugins(plugins)
    if bank:
        load_bank(bank)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    chain = distortions.parse_chain_spec(spec, np.random.default_rng(seed))
    _, pixels = read_source(str(Path(image).resolve()), max_pixels=0)
    result = distortions.to_uint8(distortions.apply_chain(to_float(pixels), chain))
    out = Path(out)
    if out.suffix.lower() == ".png":
        out.write_bytes(encode_photo_png(result))
    else:
        from PIL import Image

        try:
            Image.fromarray(result).save(out)
        except (ValueError, KeyError) as exc:
            raise click.ClickException(f"--out {out}: cannot write this format ({exc}); use .png") from None
    text = json.dumps({"seed": seed, "chain": chain}, indent=2)
    if record:
        Path(record).write_text(text + "\n")
    click.echo(text)


# ---------------------------------------------------------------- families


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--group", default=None, help="Only this group (photometric, noise, blur, spatial, compression).")
@plugin_option
@friendly_errors
def families(as_json, group, plugins):
    """List every distortion family: its group, its parameters and what severity drives."""
    from distortions.calibration import calibration_of

    load_plugins(plugins)
    fams = distortions.all_families(group)

    def scale(f):
        knots = calibration_of(f.name)
        return {"severity": list(knots[0]), "strength": list(knots[1])} if knots else None

    if as_json:
        click.echo(json.dumps([{"name": f.name, "group": f.group, "severity": f.severity,
                                "params": dict(f.params), "source": f.source, "calibration": scale(f)}
                               for f in fams], indent=2))
        return
    for f in fams:
        click.echo(f"{f.name}  [{f.group}]" + (f"  ({f.source})" if f.source != "built-in" else ""))
        if f.severity:
            click.echo(f"    raw strength 0..1: {f.severity}")
        knots = scale(f)
        if knots:
            at = {s: t for s, t in zip(knots["severity"], knots["strength"])}
            click.echo(f"    calibrated: severity 0 / 0.5 / 1 -> strength {at[0.0]:.3f} / {at[0.5]:.3f} / {at[1.0]:.3f}")
        else:
            click.echo("    not calibrated: severity is the raw strength (`bapps-build calibrate --plugin FILE`)")
        for key, text in f.params.items():
            click.echo(f"    {key}: {text}")


# ---------------------------------------------------------------- replay, verify, preview


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--id", "example_id", type=click.IntRange(min=0), required=True, help="Example id (its stem).")
@click.option("--subset", default=None, help=SUBSET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the full comparison and record as JSON.")
@plugin_option
@friendly_errors
def replay(dataset, example_id, subset, as_json, plugins):
    """Regenerate one example from its manifest record and compare it with the files.

    \b
    Example:
      bapps-build replay dataset --id 123
      bapps-build replay dataset --id 123 --subset traditional
    """
    path = resolve_subset(dataset, subset)
    result = replay_example(path, example_id, plugins)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for folder, entry in result["folders"].items():
            if not entry["exists"]:
                state = "missing on disk"
            elif entry["pixels_equal"]:
                state = "identical pixels" + (", identical bytes" if entry["bytes_equal"] else
                                              " (the PNG bytes differ: another encoder build?)")
            else:
                state = f"DIFFERENT (max |difference| {entry['max_abs_difference']})"
            click.echo(f"{folder}/{result['stem']}.png: {state}")
    if not result["ok"]:
        raise SystemExit(1)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--no-checksums", is_flag=True, help="Skip hashing every file against the manifest.")
@friendly_errors
def verify(dataset, no_checksums):
    """Check that the LPIPS loader will pair every file correctly.

    Every folder of each subset must hold the same stems, of one width, and nothing else
    with an image or .npy extension; the files must match the manifest's checksums.
    """
    from .verify import verify_dataset

    results = verify_dataset(dataset, checksums=not no_checksums)
    if not results:
        raise click.ClickException(f"{dataset} holds no BAPPS subset (<task>/<split>/<subset>/)")
    bad = 0
    for r in results:
        head = f"{r['path']}: {r['examples']} examples"
        if r["problems"]:
            bad += 1
            click.echo(f"{head}, {len(r['problems'])} problem(s):")
            for p in r["problems"][:50]:
                click.echo(f"  - {p}")
            if len(r["problems"]) > 50:
                click.echo(f"  ... and {len(r['problems']) - 50} more")
        else:
            click.echo(f"{head}, ok ({r['files_checked']} {r['checked']} checked against the manifest)")
    if bad:
        raise SystemExit(1)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the profiles (a list, one per subset) to this JSON file.")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Measure only N examples per subset, drawn at random (fast look at a big tree).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --sample draw.")
@click.option("--subset", default=None, help="Only this subset: NAME when unique, or TASK/SPLIT/SUBSET.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def stats(dataset, json_out, sample, seed, subset, quiet):
    """Print the difficulty profile of each subset of a dataset.

    Works on our builds and on plain BAPPS-format trees (anything `verify` accepts). Per
    subset: the sides' visibility (the reference measure), the share of near-identical sides,
    the p0/p1 visibility ratio, how often L2 and SSIM pick the same side; for JND the share
    of pairs below threshold; with judge/ or same/ labels the human agreement and L2's and
    SSIM's 2AFC scores; with a manifest, per family its use and median visibility.

    Example: bapps-build stats data/ --sample 2000 --json profile.json
    """
    from .stats import format_profile, profile_dataset

    if subset:
        subset = subset_rel(resolve_subset(dataset, subset))
    results = profile_dataset(dataset, sample=sample, seed=seed, progress=not quiet, subset=subset)
    for p in results:
        click.echo(format_profile(p))
    if json_out:
        from .files import write_json_atomic

        write_json_atomic(Path(json_out), results)
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="sheet.png or sheet.html")
@click.option("--n", "n", cls=RenamedOption, old=["--count"], type=click.IntRange(min=1), default=24,
              show_default=True, help="How many examples.")
@click.option("--seed", type=int, default=None, help="Pick examples at random with this seed (default: the first).")
@click.option("--ids", default=None, help="Comma-separated example ids to show.")
@click.option("--zoom", type=click.IntRange(1, 16), default=3, show_default=True, help="Pixel zoom.")
@click.option("--subset", default=None, help=SUBSET_HELP)
@friendly_errors
def preview(dataset, out, n, seed, ids, zoom, subset):
    """Draw a grid of examples with each patch's chain written under it.

    \b
    Examples:
      bapps-build preview dataset --out sheet.png
      bapps-build preview dataset --out sheet.html --n 100 --seed 1 --subset traditional
    """
    from .preview import write_preview

    path = resolve_subset(dataset, subset)
    id_list = [int(x) for x in ids.split(",")] if ids else None
    shown = write_preview(path, out, count=n, seed=seed, ids=id_list, zoom=zoom)
    click.echo(f"wrote {out} ({shown} examples from {path})")


# ---------------------------------------------------------------- real


@main.command()
@click.option("--reference", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder of reference images (the ground truth the algorithms were run on).")
@click.option("--outputs", multiple=True, type=click.Path(exists=True, file_okay=False), required=True,
              help="Folders of algorithm outputs, one per algorithm, files named like the references "
                   "(give at least two: --outputs A --outputs B, or --outputs A B).")
@click.argument("more_outputs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of triplets.")
@click.option("--out", type=click.Path(file_okay=False), default="dataset", show_default=True)
@click.option("--subset", "subset", cls=RenamedOption, old=["--name"], required=True,
              help="Name of the subset to write: superres, deblur, color, frameinterp, ...")
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--patch-size", type=click.IntRange(16, 4096), default=64, show_default=True)
@click.option("--scale-range", type=(float, float), default=(1.0, 1.0), show_default=True,
              help="Optional random rescale before cropping, MIN MAX (log-uniform); 1 1 = none.")
@click.option("--flat-threshold", type=float, default=0.015, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["bapps", "webdataset"]), default="bapps", show_default=True)
@click.option("--maxcount", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None)
@executor_option
@scheduler_option
@click.option("--resume", is_flag=True, help="Finish an interrupted build (same settings).")
@click.option("--quiet", is_flag=True)
@friendly_errors
def real(reference, outputs, more_outputs, n, out, subset, split, seed, patch_size, scale_range, flat_threshold,
         fmt, maxcount, workers, executor, scheduler, resume, quiet):
    """Triplets from the outputs of real algorithms (BAPPS's superres, deblur, color, frameinterp).

    For a reference image, p0 and p1 are aligned crops of the outputs of two different
    algorithms for it, matched by file stem. A missing counterpart, mismatched sizes or a
    single algorithm for an image are reported and skipped.

    \b
    Example:
      bapps-build real --reference gt/ --outputs edsr/ bicubic/ srgan/ --n 10000 --subset superres
    """
    from .real import RealConfig, run_real

    cfg = RealConfig(n=n, name=subset, seed=seed, split=split, patch_size=patch_size, scale_range=tuple(scale_range),
                     flat_threshold=flat_threshold, format=fmt, maxcount=maxcount)
    report = run_real(cfg, reference, list(outputs) + list(more_outputs), out, workers=workers, resume=resume,
                      progress=not quiet, log=lambda m: echo(m, err=True), executor=executor,
                      scheduler=scheduler)
    echo(format_report(report))


# ---------------------------------------------------------------- export


@main.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["webdataset", "bapps"]), required=True,
              help="webdataset: a BAPPS tree to tar shards. bapps: shards back to a BAPPS tree.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Where to write.")
@click.option("--maxcount", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Examples per shard (webdataset).")
@click.option("--stored-size", type=click.IntRange(16, 4096), default=None,
              help="Store the images at this size (bapps), e.g. 256 like the released BAPPS files.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes [default: all cores].")
@executor_option
@scheduler_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def export(source, fmt, out, maxcount, stored_size, workers, executor, scheduler, quiet):
    """Convert between a BAPPS tree and WebDataset shards.

    \b
    Shards hold one sample per example: ref.png, p0.png, p1.png (JND: p0.png, p1.png),
    judge.npy / same.npy when labelled, and json (recipe and counts); NAME-000000.tar ...
    and index.json per subset. The same tree always gives the same shard bytes.

    \b
    Examples:
      bapps-build export dataset --format webdataset --out shards
      bapps-build export shards --format bapps --out tree --stored-size 256
    """
    from .export import export_to_shards, export_to_tree

    if fmt == "webdataset":
        if stored_size:
            raise click.UsageError("--stored-size goes with --format bapps")
        summary = export_to_shards(source, out, maxcount=maxcount, workers=workers, executor=executor,
                                   scheduler=scheduler, progress=not quiet, log=lambda m: echo(m, err=True))
    else:
        summary = export_to_tree(source, out, stored_size=stored_size, workers=workers, executor=executor,
                                 scheduler=scheduler, progress=not quiet, log=lambda m: echo(m, err=True))
    for s in summary["subsets"]:
        click.echo(f"{s['subset']}: {s['examples']} examples" + (f" in {s['shards']} shard(s) -> {s['target']}"
                                                                  if "shards" in s else ""))
    click.echo(f"{summary['examples']} examples in {summary['seconds']:.1f} s"
               + (f" ({summary['rate_per_second']:.0f}/s)" if summary["rate_per_second"] else ""))


# ---------------------------------------------------------------- the other packages' commands


def _add_package_commands():
    """judgments (tasks, ingest, judgments, evaluate) and generators bring their own commands;
    their heavy libraries load only when one of those commands runs."""
    from generators.cli import COMMANDS as generator_commands
    from judgments.cli import COMMANDS as judgment_commands

    from .calibration_cli import calibrate

    for command in judgment_commands + generator_commands + [calibrate]:
        main.add_command(command)


_add_package_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
