"""The judgments commands of `bapps-build`: tasks, ingest, judgments report, evaluate.

bapps_build/cli.py adds them to its group: `for c in judgments.cli.COMMANDS: main.add_command(c)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from bapps_build.cli_errors import friendly_errors
from bapps_build.subsets import resolve_subset, subset_rel

from .aggregate import MODELS
from .tasks import DEFAULT_PRACTICE, DEFAULT_SENTINEL_RATE, PLATFORMS

SUBSET_HELP = "Which subset: its NAME when unique in DATASET (e.g. traditional), or TASK/SPLIT/SUBSET."


def qualified_subset(dataset, subset):
    """--subset NAME or TASK/SPLIT/SUBSET -> TASK/SPLIT/SUBSET (None stays None: every subset)."""
    return subset_rel(resolve_subset(dataset, subset)) if subset else None


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
@click.option("--subset", default=None, help=SUBSET_HELP)
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
    from .catalog import resolve_subset as load_chosen_subset
    from .tasks import TaskSettings, build_task_set

    chosen = load_chosen_subset(dataset, subset)
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
@click.option("--subset", default=None, help="Only this subset: NAME when unique, or TASK/SPLIT/SUBSET.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def report(dataset, subset, as_json):
    """Judgments per example, workers, sentinels, who was dropped and why, agreement, human ceiling.

    \b
    Example:
      bapps-build judgments report dataset
    """
    from .ingest import report_dataset
    from .report import format_report

    reports = report_dataset(dataset, qualified_subset(dataset, subset))
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
@click.option("--subset", default=None, help="Only this subset: NAME when unique, or TASK/SPLIT/SUBSET.")
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
      bapps-build evaluate dataset --metric l2 --subset traditional      # when only one is named so
    """
    from .evaluate import evaluate_dataset, format_results

    results = evaluate_dataset(dataset, metrics, qualified_subset(dataset, subset), batch_size,
                               log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(format_results(results))


# ---------------------------------------------------------------- serve


@click.command()
@click.argument("tasks_dir", metavar="TASKS", type=click.Path(exists=True))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False), required=True,
              help="The dataset the tasks were made from.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; keep 127.0.0.1 behind a TLS reverse proxy (docs/crowd.md).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), default="study.sqlite", show_default=True,
              help="The study database (SQLite, WAL); the same file again continues the study.")
@click.option("--judgments", "judgments_wanted", type=click.IntRange(min=1), default=None,
              help="Completed assignments wanted per HIT [default: the task set's --judgments].")
@click.option("--assignment-timeout", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds without an answer after which an assignment is released to others.")
@click.option("--consent", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Consent/instructions text shown first (.txt as text, .html as markup).")
@click.option("--completion-url", default=None,
              help="Where to send participants at the end, e.g. https://app.prolific.com/submissions/complete?cc=CODE.")
@click.option("--completion-code", default=None, help="The code shown at the end [default: cc= of the URL, or random].")
@click.option("--hits-per-participant", type=click.IntRange(min=1), default=1, show_default=True,
              help="HITs one participant may do (Prolific: 1; lab sessions: more).")
@click.option("--admin-token", default=None, help="Token of /admin [default: random, kept in the database].")
@click.option("--synchronous", type=click.Choice(["normal", "full"]), default="normal", show_default=True,
              help="normal: an answer is acknowledged once in the database's WAL file (survives a killed server "
                   "or a closed tab, not a power cut); full: once on the disk (survives a power cut; an fsync per "
                   "group of answers, slower on slow disks).")
@friendly_errors
def serve(tasks_dir, dataset, host, port, db, judgments_wanted, assignment_timeout, consent, completion_url,
          completion_code, hits_per_participant, admin_token, synchronous):
    """Run the study yourself: serve a task set's 2AFC / JND pages and store every answer.

    \b
    Participants come with Prolific's PROLIFIC_PID, STUDY_ID, SESSION_ID, with ?participant=ID
    (lab), or get an id kept in a cookie; each gets the next HIT that needs judgments. Every
    answer is a row of the SQLite database, committed when it arrives; ingest it with
    `bapps-build ingest study.sqlite --dataset DATASET`. Needs: pip install 'bapps-build[serve]'.

    \b
    Examples:
      bapps-build serve jnd-lab --dataset dataset --db jnd.sqlite
      bapps-build serve tasks-val --dataset dataset --judgments 5 \\
          --completion-url 'https://app.prolific.com/submissions/complete?cc=C1234'
    """
    try:
        from .serve.app import run_server
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    run_server(tasks_dir, dataset, host, port, db, judgments_wanted, assignment_timeout, consent, completion_url,
               completion_code, hits_per_participant, admin_token, synchronous, log=lambda m: click.echo(m, err=True))


# ---------------------------------------------------------------- simulate


@click.command()
@click.argument("tasks_dir", metavar="TASKS", type=click.Path(exists=True))
@click.option("--observer", default="l2", show_default=True,
              help="The distance the simulated observers perceive: l2, ssim, psnr or module:function.")
@click.option("--noise", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="SIGMA of the Thurstone observer, in units of the median test distance (0: no noise).")
@click.option("--workers", type=click.IntRange(min=1), default=20, show_default=True,
              help="Simulated workers (participants with --serve).")
@click.option("--spammers", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of workers who answer at random.")
@click.option("--rejects", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of assignments the requester rejected (files only).")
@click.option("--platform", type=click.Choice(["mturk", "toloka", "generic"]), default="generic", show_default=True,
              help="Export shape to write.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Results file to write (generic: .csv or .jsonl); the truth goes to OUT.truth.csv.")
@click.option("--judgments", "judgments_wanted", type=click.IntRange(min=1), default=None,
              help="Assignments per HIT [default: the task set's --judgments].")
@click.option("--jnd-threshold", type=click.FloatRange(min=0), default=None,
              help="JND: distance (median units) below which the observer says same [default: 30th percentile].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--serve", "serve_url", default=None,
              help="Instead of a file: drive a running `bapps-build serve` at this URL over HTTP.")
@click.option("--pace", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="--serve: seconds between one participant's answers.")
@click.option("--hits-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
              help="--serve: HITs each participant asks for (the server's --hits-per-participant caps it).")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="--serve: stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@friendly_errors
def simulate(tasks_dir, observer, noise, workers, spammers, rejects, platform, out, judgments_wanted, jnd_threshold,
             seed, serve_url, pace, hits_per_worker, duration, as_json):
    """A simulated crowd: dry-run tasks -> ingest -> report -> evaluate before paying.

    Thurstone observers answer the task set's trials (P(p1) grows with D(ref,p0) - D(ref,p1);
    JND "same" below a threshold), spammers at random; the results are written in the
    platform's real export shape, or posted to a running `serve` (--serve URL, the load test).

    \b
    Examples:
      bapps-build simulate tasks-val --observer ssim --noise 0.5 --workers 50 --spammers 0.1 \\
          --rejects 0.05 --platform mturk --out sim/batch_results.csv
      bapps-build simulate jnd-lab --serve http://127.0.0.1:8000/ --workers 30 --pace 2
    """
    from .serve.db import load_task_record
    from .simulate import simulate_files, simulate_serve

    record, folder = load_task_record(tasks_dir)
    if serve_url:
        summary = simulate_serve(record, folder, serve_url, observer, noise, workers, spammers, pace, hits_per_worker,
                                 seed, duration, jnd_threshold)
        for key in ("acked", "truth", "latencies"):
            summary.pop(key)
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        lat = summary["latency_ms"]
        click.echo(f"{summary['answers']} answers from {workers} participants in {summary['seconds']:.1f} s "
                   f"({summary['answers_per_second']:.1f}/s); latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
                   f"p99 {lat['p99']:.1f} ms; {len(summary['failures'])} failures")
        for f in summary["failures"][:10]:
            click.echo(f"  {f}", err=True)
        return
    if not out:
        raise click.UsageError("give --out FILE (or --serve URL)")
    summary = simulate_files(record, folder, out, observer, noise, workers, spammers, rejects, platform,
                             judgments_wanted, seed, jnd_threshold)
    summary.pop("truth")
    summary.pop("plan")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {summary['out']} ({platform}): {summary['assignments']} assignments by {workers} workers "
               f"({len(summary['spammers'])} spammers), {summary['rejected']} rejected; truth in {summary['truth_file']}")


# ---------------------------------------------------------------- plan


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--subset", default=None, help=SUBSET_HELP)
@click.option("--metric", "metrics", multiple=True, help="Also plan the CI of this metric's score (repeatable).")
@click.option("--judgments", "candidates", default="1,2,3,5,8,10,15,20", show_default=True,
              help="Judgments per example to try, comma-separated.")
@click.option("--examples", type=click.IntRange(min=2), default=None,
              help="Examples of the planned study [default: as many as the pilot judged].")
@click.option("--bootstrap", type=click.IntRange(min=50), default=1000, show_default=True)
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--target", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Half-width wanted (e.g. 0.01): prints the smallest n that reaches it.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def plan(dataset, subset, metrics, candidates, examples, bootstrap, confidence, target, seed, as_json):
    """How many judgments per example: bootstrap CIs of the human and metric 2AFC scores vs n.

    Works from what a pilot (or `bapps-build simulate`) run ingested into DATASET.

    \b
    Example:
      bapps-build plan dataset --subset 2afc/val/traditional --metric l2 --metric ssim --target 0.01
    """
    from .plan import format_plan, plan_subset

    try:
        ns = [int(x) for x in candidates.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{candidates!r}: comma-separated integers", param_hint="--judgments") from None
    result = plan_subset(dataset, subset, metrics, ns, examples, bootstrap, confidence, target, seed)
    click.echo(json.dumps(result, indent=2) if as_json else format_plan(result))


COMMANDS = [tasks, ingest, judgments, evaluate, serve, simulate, plan]
