"""The judgments commands of `bapps-build`: tasks, ingest, judgments report, evaluate.

bapps_build/cli.py adds them to its group: `for c in judgments.cli.COMMANDS: main.add_command(c)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from bapps_build.errors import friendly_errors as people_errors

from .aggregate import MODELS, AggregateError
from .catalog import CatalogError
from .evaluate import EvaluateError
from .ingest import IngestError
from .metrics import MetricError
from .readers import ResultsError
from .store import StoreError
from .tasks import DEFAULT_PRACTICE, DEFAULT_SENTINEL_RATE, PLATFORMS, TasksError

PEOPLE_ERRORS = (CatalogError, TasksError, ResultsError, IngestError, StoreError, EvaluateError, MetricError,
                 AggregateError, FileNotFoundError)


friendly_errors = people_errors(PEOPLE_ERRORS)


# ---------------------------------------------------------------- tasks


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--platform", type=click.Choice(PLATFORMS), required=True,
              help="mturk: input CSV + layout; toloka: task TSV; generic: ready pages for a lab or own server.")
@click.option("--judgments", "judgments_wanted", type=click.IntRange(min=1), required=True,
              help="Judgments wanted per example (MTurk assignments per HIT, Toloka overlap). Paper: 2 train, 5 val, 3 JND.")
@click.option("--per-hit", type=click.IntRange(min=1), required=True, help="Test trials per HIT (page).")
@click.option("--sentinel-rate", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of a HIT's non-practice trials that are sentinels [default: 0.1 for 2afc, 0.2 for jnd].")
@click.option("--practice", type=click.IntRange(min=0), default=None,
              help="Practice trials at the start of each HIT, not counted [default: 0 for 2afc, 10 for jnd].")
@click.option("--base-url", default=None,
              help="Where TASKS/images/ will be served, e.g. https://example.org/bapps/images (needed for mturk, toloka).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="The task folder to write (TASKS).")
@click.option("--subset", default=None, help="TASK/SPLIT/SUBSET when DATASET holds several.")
@click.option("--name", default=None, help="Name of the task set [default: the --out folder's name].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the HIT order, sides and sentinels.")
@friendly_errors
def tasks(dataset, platform, judgments_wanted, per_hit, sentinel_rate, practice, base_url, out, subset, name, seed):
    """Write the files a crowd platform needs to collect judgments for one subset.

    \b
    TASKS/images/ (host it), TASKS/tasks.json (what each trial id means; also recorded in the
    dataset for `ingest`), and per platform: mturk/input.csv + mturk/layout.html,
    toloka/tasks.tsv, or generic/hit-NNNN.html pages. TASKS/README.txt says what to do next.

    \b
    Examples:
      bapps-build tasks dataset --subset 2afc/val/traditional --platform mturk \\
          --judgments 5 --per-hit 50 --base-url https://example.org/bapps/images --out tasks-val
      bapps-build tasks dataset --subset jnd/val/traditional --platform generic \\
          --judgments 3 --per-hit 160 --out jnd-lab
    """
    from .catalog import resolve_subset
    from .tasks import TaskSettings, build_task_set

    chosen = resolve_subset(dataset, subset)
    settings = TaskSettings(
        platform=platform, judgments=judgments_wanted, per_hit=per_hit,
        sentinel_rate=DEFAULT_SENTINEL_RATE[chosen.task] if sentinel_rate is None else sentinel_rate,
        practice=DEFAULT_PRACTICE[chosen.task] if practice is None else practice,
        base_url=base_url, seed=seed, name=name or Path(out).resolve().name)
    record = build_task_set(chosen, out, settings)
    d = record["derived"]
    click.echo(f"wrote {out}: {d['hits']} HITs of {d['trials_per_hit']} trials ({d['practice_per_hit']} practice, "
               f"{d['test_trials_per_hit']} test, {d['sentinels_per_hit']} sentinels) for {chosen.rel}; "
               f"next steps in {Path(out) / 'README.txt'}")


# ---------------------------------------------------------------- ingest


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False), required=True,
              help="The dataset the tasks were made from.")
@click.option("--tasks", "task_files", multiple=True, type=click.Path(exists=True),
              help="A TASKS folder or its tasks.json, when the dataset lacks the record (repeatable).")
@click.option("--min-sentinel-accuracy", type=click.FloatRange(0, 1), default=None,
              help="Drop workers below this share of right sentinels [default: as last time, else 0.9 for "
                   "2afc, 0.75 for jnd].")
@click.option("--partial-labels", is_flag=True,
              help="Write labels for the judged examples even while others have none (verify will flag it).")
@click.option("--aggregate", "aggregate", multiple=True, type=click.Choice(sorted(MODELS)),
              help="Also fit this crowd-kit model (needs crowd-kit); written beside the fractions (repeatable).")
@click.option("--count-repeats/--one-vote-per-worker", "count_repeats", default=None,
              help="Count every judgment a worker gave one example (in several assignments), or only their latest "
                   "by submit time [default: as last time, else one vote per worker].")
@click.option("--timing-tolerance", "timing_tolerance", type=click.FloatRange(min=0), default=None, metavar="MS",
              help="JND: exclude trials whose measured phases were off 1000/250/1000 ms by more than MS "
                   "[default: as last time, else 50].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@friendly_errors
def ingest(results, dataset, task_files, min_sentinel_accuracy, partial_labels, aggregate, count_repeats,
           timing_tolerance, as_json):
    """Turn crowd results into BAPPS labels (judge/ or same/), all or nothing.

    Reads MTurk batch results CSVs (any answer shape, Turkle's too), Toloka result TSVs and the
    generic CSV / JSON Lines (worker, item, response [, assignment, side, time_ms, status, submitted,
    timing]).
    Drops rejected assignments and workers who fail the sentinels, counts each judgment once,
    and adds to what earlier ingests collected; the same file twice changes nothing. Several
    downloads of one batch may come in any order: an assignment's status is the platform's
    latest, by the export's own times (SubmitTime/ApprovalTime/RejectionTime, Toloka's
    ASSIGNMENT:submitted/accepted/rejected). A worker's repeated judgments of one example count
    once (the latest); JND trials whose timing was off the protocol are excluded.

    \b
    Examples:
      bapps-build ingest Batch_123_batch_results.csv --dataset dataset
      bapps-build ingest results/*.jsonl --dataset dataset --min-sentinel-accuracy 0.8
      bapps-build ingest toloka.tsv --dataset dataset --tasks tasks-val --aggregate dawid-skene
      bapps-build ingest Batch_4242_batch_results.csv "Batch_4242_batch_results (1).csv" reviewed.csv \\
          --dataset dataset
      bapps-build ingest jnd-results.csv --dataset dataset --timing-tolerance 34 --count-repeats
    """
    from .ingest import ingest_files
    from .report import format_report

    summary = ingest_files(results, dataset, task_files, min_sentinel_accuracy, write_labels=True,
                           partial_labels=partial_labels, aggregate=aggregate,
                           log=lambda m: click.echo(m, err=True), count_repeats=count_repeats,
                           timing_tolerance_ms=timing_tolerance)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"read {summary['rows_read']} judgments from {len(summary['files'])} file(s)")
    for report in summary["subsets"].values():
        if report.get("skipped"):
            click.echo(f"{report['subset']}: these results were ingested before; nothing changed "
                       f"(`bapps-build judgments report` shows the state)")
            continue
        click.echo(format_report(report))
        if not report.get("changed"):
            click.echo("  nothing new: every judgment was already ingested")


# ---------------------------------------------------------------- judgments report


@click.group()
def judgments():
    """The judgments collected for a dataset."""


@judgments.command("report")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--subset", default=None, help="Only TASK/SPLIT/SUBSET.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def report(dataset, subset, as_json):
    """Judgments per example, workers, sentinels, who was dropped and why, agreement, human ceiling.

    \b
    Example:
      bapps-build judgments report dataset
    """
    from .report import format_report, report_dataset

    reports = report_dataset(dataset, subset)
    if not reports:
        raise click.ClickException(f"{dataset}: no judgments ingested yet (bapps-build ingest RESULTS --dataset "
                                   f"{dataset})")
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for r in reports:
        click.echo(format_report(r))


# ---------------------------------------------------------------- evaluate


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--metric", "metrics", multiple=True, required=True,
              help="l2, psnr, ssim, lpips[-alex|-vgg|-squeeze], or module:function / file.py:function taking "
                   "two float32 HxWx3 [0, 1] images and returning a distance (repeatable).")
@click.option("--subset", default=None, help="Only TASK/SPLIT/SUBSET.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def evaluate(dataset, metrics, subset, batch_size, as_json):
    """Score distance metrics against the human labels: 2AFC score per subset, JND mAP.

    Smaller distance = more similar. l2 is the mean squared error on [0, 1] pixels, psnr is minus
    the PSNR, ssim is 1 - SSIM. The `human` row is one judge scored against the others.

    \b
    Examples:
      bapps-build evaluate dataset --metric l2 --metric ssim --metric psnr
      bapps-build evaluate dataset --metric my_metrics.py:distance
      bapps-build evaluate dataset --metric lpips --subset 2afc/val/traditional
    """
    from .evaluate import evaluate_dataset, format_results

    results = evaluate_dataset(dataset, metrics, subset, batch_size, log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(format_results(results))


COMMANDS = [tasks, ingest, judgments, evaluate]
