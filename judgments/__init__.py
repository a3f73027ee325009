"""Human judgments: crowd task files out, results in as BAPPS labels, metrics scored against them.

    tasks.py      `bapps-build tasks`: images, task records, MTurk / Toloka / generic files
    sentinels.py  obvious trials (sentinels, practice) from the dataset's own patches
    layouts/      the task pages (2AFC, JND) with ${column} variables: Jinja2 templates (.html,
                  .js, .css) in layouts/templates/, shipped as package data
    catalog.py    what an item id means: test example, sentinel, practice
    readers.py    MTurk, Toloka and generic results files -> one long table
    qc.py         rejected assignments, sentinel scores, counts
    store.py      what a subset keeps (rows, counts, raw copies) and the all-or-nothing writes
    ingest.py     `bapps-build ingest`: read, resolve, merge, QC, labels; the stored reports again
    report.py     a subset's report: workers, agreement, human ceiling (no file read or written)
    aggregate.py  crowd-kit models beside the fractions
    metrics.py    l2, psnr, ssim, lpips, any callable
    evaluate.py   `bapps-build evaluate`: 2AFC score and JND mAP
    cli.py        the click commands (COMMANDS)
"""
from bapps_build.hooks import ShardField, register_shard_field

from .store import shard_counts, write_shard_counts

# judgment counts travel with their examples through `bapps-build export` (the core asks
# through its hook; it does not import this package)
register_shard_field(ShardField("counts", shard_counts, write_shard_counts))
