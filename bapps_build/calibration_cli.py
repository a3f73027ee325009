"""`bapps-build calibrate`: fit families' severity maps and print the calibration table."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

import distortions

from .calibration import (CALIBRATION_SEED, N_PATCHES, format_table, run_calibration, target_visibility,
                          write_calibration)
from .cli_errors import friendly_errors


def plugin_calibration_path(plugin: str) -> Path:
    """Where a plugin file's fitted maps live: beside it, <name>.calibration.json."""
    return Path(plugin).with_suffix(".calibration.json")


def _merge_into(path: Path, result: dict) -> dict:
    """Update the maps and table rows of the fitted families in an existing calibration file."""
    old = json.loads(path.read_text()) if path.exists() else None
    if old is None:
        return result
    maps = {name: {"severity": m["severity"], "strength": m["strength"]} for name, m in old["families"].items()}
    maps.update(result["maps"])
    table = dict(old.get("table", {}).get("median_visibility", {}))
    table.update(result["table"])
    return {"maps": maps, "table": table}


@click.command()
@click.option("--families", default=None,
              help="Comma-separated families to fit [default: every traditional family, or a "
                   "plugin's own families with --plugin].")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A Python file defining families (repeatable); its maps are written beside it.")
@click.option("--patches", type=click.IntRange(8, 4096), default=N_PATCHES, show_default=True,
              help="Patches in the calibration set (and in the independent check set).")
@click.option("--seed", type=click.IntRange(min=0), default=CALIBRATION_SEED, show_default=True,
              help="Seed of the calibration set (the check set uses seed + 1).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Calibration file to write or update [default: PLUGIN.calibration.json beside "
                   "the plugin; without --plugin, only the table is printed].")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@friendly_errors
def calibrate(families, plugins, patches, seed, out, as_json):
    """Fit each family's severity -> strength map so that its median visibility follows one
    common curve (s = 0 at the visibility threshold, s = 1 strong), and print the table of
    median visibility per family at s = 0, 0.25, 0.5, 0.75, 1 on an independent check set.

    \b
    The measure and the curve: docs/calibration.md. A plugin family is then sampled through
    its fitted map whenever it is loaded with --plugin (the map file sits beside it).

    \b
    Examples:
      bapps-build calibrate --plugin posterize.py
      bapps-build calibrate --families jpeg,shift
      bapps-build calibrate --out distortions/calibration.json      # refresh the built-in maps
    """
    added = []
    for p in plugins:
        added += distortions.load_plugin_file(p)
    if families:
        names = distortions.family_names([n.strip() for n in families.split(",") if n.strip()])
    elif plugins:
        names = added
    else:
        names = distortions.family_names()
    names = [n for n in names if distortions.get_family(n).group != "cnn"]
    if not names:
        raise click.UsageError("no family to calibrate (the cnn family is calibrated by `generators train`)")
    if out is None and len(plugins) == 1:
        out = str(plugin_calibration_path(plugins[0]))
    started = time.time()
    with click.progressbar(length=len(names), label="fitting", file=sys.stderr) as bar:
        result = run_calibration(names, n_patches=patches, seed=seed, progress=lambda name: bar.update(1))
    if out:
        merged = _merge_into(Path(out), result)
        write_calibration(Path(out), merged["maps"], merged["table"])
    if as_json:
        click.echo(json.dumps({"table": result["table"], "target": [target_visibility(s) for s in (0, .25, .5, .75, 1)],
                               "maps": result["maps"]}, indent=2))
    else:
        click.echo(format_table(result["table"]))
        for name in names:
            clipped = [s for s, c in zip(result["maps"][name]["severity"], result["maps"][name]["out_of_range"]) if c]
            if clipped:
                click.echo(f"warning: {name} cannot reach the target at severities {clipped} within its "
                           "raw range; widen its sample() range", err=True)
        click.echo(f"{len(names)} families in {time.time() - started:.0f} s" + (f"; maps written to {out}" if out else ""),
                   err=True)
