"""HTML task pages with ${column} variables, as MTurk fills them (plain text substitution).

One page holds a fixed number of trials (practice + test + sentinels of one HIT); the trial
data sits in `${item3}`-style variables, so the same page serves every row of the input CSV.
Given a row, `render_layout` fills the page itself (each value HTML-escaped), as the generic
platform's ready-made pages and `bapps-build serve` need; `fill_template` does what MTurk does
with a row (raw text substitution), for tests.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional

from markupsafe import Markup

from .page import TASKS, render_page, render_served_page

VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def trial_columns(task: str, i: int) -> List[str]:
    """The input columns of trial i (1-based) of a page, in the order of the input CSV."""
    if task == "2afc":
        return [f"item{i}", f"p0side{i}", f"ref{i}", f"left{i}", f"right{i}"]
    return [f"item{i}", f"first{i}", f"second{i}"]


def page_slots(task: str, n_trials: int, row: Optional[Mapping[str, object]]) -> Dict[str, str]:
    """Every trial column of the page -> the row's value, or MTurk's ${column} when row is None."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    columns = [c for i in range(1, n_trials + 1) for c in trial_columns(task, i)]
    if row is None:
        return {c: Markup("${%s}" % c) for c in columns}
    missing = [c for c in columns if c not in row]
    if missing:
        raise KeyError(f"the row has no column(s) {', '.join(missing[:5])} that the page uses")
    return {c: str(row[c]) for c in columns}


def render_layout(task: str, n_trials: int, practice: int = 0, crowd_form: bool = True,
                  row: Optional[Mapping[str, object]] = None) -> str:
    """The page for n_trials trials (the first `practice` of them announced as practice).

    crowd_form: wrap the answers in MTurk's <crowd-form> (loads crowd-html-elements.js from
    assets.crowd.aws); without it the page still works as a plain form (HTMLQuestion /
    ExternalQuestion) and, opened directly, as a standalone page that offers its results as
    JSON Lines in the generic format.
    row: the trial columns' values for a filled page; None leaves the ${column} variables.
    """
    return render_page(task, n_trials, practice, crowd_form, page_slots(task, n_trials, row))


def render_served_layout(task: str, n_trials: int, practice: int, row: Mapping[str, object], config: dict) -> str:
    """The filled page `bapps-build serve` sends, with the settings of its answer-posting script."""
    return render_served_page(task, n_trials, practice, page_slots(task, n_trials, row), config)


def template_variables(html: str) -> List[str]:
    return sorted(set(VARIABLE.findall(html)))


def fill_template(html: str, row: Dict[str, str]) -> str:
    """Replace every ${column} with row[column], as MTurk does; a missing column is an error."""
    missing = [name for name in template_variables(html) if name not in row]
    if missing:
        raise KeyError(f"the row has no column(s) {', '.join(missing[:5])} that the page uses")
    return VARIABLE.sub(lambda m: str(row[m.group(1)]), html)
