"""`bapps-build generators ...`: sample, train, list and preview a bank of CNN generators.

Importing this module does not import torch (the commands do, when they run).
"""
from __future__ import annotations

import json

import click

from bapps_build.cli_aliases import RenamedOption
from bapps_build.cli_errors import friendly_errors

DEFAULT_STEPS = 200


def _names(values):
    out = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out or None


@click.group("generators")
def generators():
    """CNN distortions: a bank of random-architecture generators (the `cnn` family).

    \b
    A bank is made in three steps:
      bapps-build generators sample --n 96 --seed 0 --out bank        # one JSON config per network
      bapps-build generators train bank --steps 200                   # resumable, network by network
      bapps-build generators preview bank --out sheet.png             # look at what they do
    then used by:
      bapps-build distort --n 1000 --subset cnn --bank bank --out dataset
    """


@generators.command("sample")
@click.option("--n", "n", cls=RenamedOption, old=["--count"], type=click.IntRange(min=1), default=96,
              show_default=True, help="Number of networks.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bank seed; network i depends only on (seed, i).")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="The bank folder.")
@friendly_errors
def sample_command(n, seed, out):
    """Draw N network configs at random and write one JSON file per network.

    \b
    Example:
      bapps-build generators sample --n 96 --seed 0 --out bank
    """
    from .bank import sample_bank
    from .config import summarize_config

    bank = sample_bank(out, n, seed)
    for c in bank.configs()[:10]:
        click.echo(summarize_config(c))
    if n > 10:
        click.echo(f"... and {n - 10} more")
    click.echo(f"wrote {n} configs to {bank.path} (seed {seed}); next: bapps-build generators train {out}")


@generators.command("train")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--sources", multiple=True,
              help="Folder, glob or list file of training images (repeatable). Default: the scikit-image photos.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help=f"Batches per network [default: {DEFAULT_STEPS}].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Instead of --steps: passes over the sources, one patch per image per pass.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--patch-size", type=click.IntRange(16, 1024), default=64, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Images of the val split (by content hash, as distort) are not trained on.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="cuda: mixed precision and channels_last.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Save the training state every N steps (what an interrupted run resumes from).")
@click.option("--vgg-weights", type=click.Path(dir_okay=False), default=None,
              help="torchvision's vgg16-397923af.pth, if not in $TORCH_HOME/hub/checkpoints/.")
@click.option("--no-vgg", is_flag=True, help="Train without the VGG loss term (recorded in each status).")
@click.option("--retry-failed", is_flag=True, help="Train failed networks again, from scratch.")
@click.option("--networks", multiple=True, help="Only these networks (comma-separated names).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Networks trained at once [default: every core on the CPU, 1 on a GPU].")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: processes on this machine. dask: one network per Dask task (--scheduler, or a LocalCluster).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler, e.g. tcp://head-node:8786.")
@click.option("--no-gate", is_flag=True,
              help="Do not score the newly trained networks with the quality gate (run `generators gate` later).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def train_command(bank, sources, steps, epochs, batch_size, patch_size, val_fraction, device, checkpoint_every,
                  vgg_weights, no_vgg, retry_failed, networks, workers, executor, scheduler, no_gate, quiet):
    """Train every network of BANK that is not trained yet.

    Run it again after an interruption: finished networks are kept, the ones that were
    training continue from their last saved state. A network whose loss becomes NaN or
    infinite is marked failed (with the reason) and the others go on. On the CPU each
    network trains on one thread and --workers networks train at once, so the weights do
    not depend on how many run together.

    \b
    Examples:
      bapps-build generators train bank
      bapps-build generators train bank --sources ~/photos --epochs 1 --device cuda
      bapps-build generators train bank --no-vgg        # without the VGG16 checkpoint
      bapps-build generators train bank --executor dask --scheduler tcp://head-node:8786
    """
    if steps is not None and epochs is not None:
        raise click.UsageError("give --steps or --epochs, not both")
    from .training import TrainSettings, train_bank

    if epochs is None and steps is None:
        steps = DEFAULT_STEPS
    settings = TrainSettings(steps=steps if epochs is None else None, epochs=epochs, batch_size=batch_size,
                             patch_size=patch_size, sources=tuple(sources), val_fraction=val_fraction,
                             device=device, checkpoint_every=checkpoint_every, no_vgg=no_vgg,
                             vgg_weights=vgg_weights, retry_failed=retry_failed)
    summary = train_bank(bank, settings, progress=not quiet, log=lambda m: click.echo(m, err=True),
                         only=_names(networks), workers=workers, executor=executor, scheduler=scheduler)
    click.echo(f"{len(summary['trained'])} trained, {len(summary['failed'])} failed, "
               f"{len(summary['skipped'])} skipped (already done or failed before) on {summary['device']}")
    for name, reason in summary["failed"].items():
        click.echo(f"  {name} failed: {reason}")
    if summary["trained"] and not no_gate:
        from .gate import gate_bank

        results = gate_bank(bank, device=summary["device"], log=lambda m: click.echo(f"  gate: {m}"),
                            only=list(summary["trained"]))
        rejected = [n for n, st in results.items() if st["state"] == "rejected"]
        click.echo(f"quality gate: {len(results) - len(rejected)} accepted, {len(rejected)} rejected")


@generators.command("gate")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--networks", multiple=True, help="Only these networks (comma-separated names).")
@friendly_errors
def gate_command(bank, device, networks):
    """Score each trained network on held-out patches; reject those outside the traditional
    families' visibility range or that destroy content; calibrate the accepted ones' severity.

    A network is rejected when more than 25% of 48 held-out natural-photo patches come out
    with SSIM < 0.3 or visibility > 2 x target_visibility(1), or when its median visibility
    is above 2 x target_visibility(1) or below the visibility threshold. Rejected networks
    are never used by the cnn family or the cnn and mix subsets. `generators train` runs
    the gate on what it trained (unless --no-gate); run this for banks trained before.

    \b
    Example:
      bapps-build generators gate bank
    """
    from .gate import gate_bank

    results = gate_bank(bank, device=device, log=click.echo, only=_names(networks))
    if not results:
        raise click.ClickException(f"{bank} has no trained network to gate; train it with "
                                   f"`bapps-build generators train {bank}`")
    rejected = [n for n, st in results.items() if st["state"] == "rejected"]
    click.echo(f"{len(results) - len(rejected)} accepted, {len(rejected)} rejected")


@generators.command("list")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def list_command(bank, as_json):
    """Show each network's state (pending, training, done, failed or rejected and why), its quality
    gate scores and config summary."""
    from .bank import bank_table

    rows = bank_table(bank)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        steps = f"{r['steps_done']}/{r['steps_total']}" if r["steps_total"] else ""
        line = f"{r['state']:<8} {steps:>9}  {r['summary']}"
        if r.get("gate"):
            g = r["gate"]
            line += (f"\n           gate: median visibility {g['median_visibility']}, destroyed "
                     f"{100 * g['destroyed_share']:.0f}%" + (", severity calibrated" if r.get("calibrated") else ""))
        if r["reason"]:
            line += f"\n           reason: {r['reason']}"
        click.echo(line)
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))


@generators.command("preview")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="sheet.png")
@click.option("--n", "n", cls=RenamedOption, old=["--count"], type=click.IntRange(1, 32), default=4,
              show_default=True, help="Patches per network.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Which patches.")
@click.option("--sources", multiple=True, help="Where the patches come from (default: the scikit-image photos).")
@click.option("--zoom", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--networks", multiple=True, help="Only these networks (comma-separated names).")
@friendly_errors
def preview_command(bank, out, n, seed, sources, zoom, networks):
    """Draw each trained network's output on the same few patches, labelled with its config.

    \b
    Example:
      bapps-build generators preview bank --out sheet.png
    """
    from .preview import write_preview

    sheet = write_preview(bank, out, count=n, seed=seed, sources=sources, zoom=zoom, networks=_names(networks))
    click.echo(f"wrote {out} ({sheet.size[0]}x{sheet.size[1]})")


COMMANDS = [generators]
