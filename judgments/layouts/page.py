"""The task page: one skeleton for 2AFC and JND, trials one at a time, keyboard shortcuts.

2AFC: the reference in the middle, the two patches left and right (the row says on which side
p0 is; the answer is the side chosen, `left` or `right`, and the page sends the side back).
JND: the reference alone for 1000 ms, a blank for 250 ms, the distorted patch for 1000 ms, then
"same" / "different"; the answer buttons stay disabled until the sequence has ended, and the
measured phase durations go into `timing<i>` and `window.bappsLog`.

The page is package data, not code in strings: templates/task_page.html with its .css, .js and
per-task parts, rendered by Jinja2 with autoescape on (values in HTML are escaped; values in the
script go through `tojson`). `bapps-build serve` sends served_task_page.html, the same page plus
its answer-posting script.
"""
from __future__ import annotations

import functools
from typing import Mapping

import jinja2

FIRST_MS, BLANK_MS, SECOND_MS = 1000, 250, 1000
DISPLAY_PX = 256  # 64 px patches at 4x, pixelated: the browser adds no resampling blur of its own
TASKS = ("2afc", "jnd")


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the package's templates. The whitespace settings keep block
    tags ({% if %}, {% include %}) from adding lines of their own; StrictUndefined turns a value
    the page needs but was not given into an error instead of an empty string."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("judgments.layouts", "templates"),
        autoescape=jinja2.select_autoescape(("html", "js", "css")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def template_source(name: str) -> str:
    """A template file as it is, unrendered."""
    env = environment()
    return env.loader.get_source(env, name)[0]


# The instructions as HTML, for pages that show them elsewhere (serve's consent page).
INSTRUCTIONS = {task: template_source(f"instructions_{task}.html").rstrip("\n") for task in TASKS}


def page_values(task: str, n_trials: int, practice: int, crowd_form: bool, slot: Mapping[str, str]) -> dict:
    return {"task": task, "n_trials": n_trials, "practice": int(practice), "crowd_form": crowd_form,
            "slot": slot, "display_px": DISPLAY_PX, "first_ms": FIRST_MS, "blank_ms": BLANK_MS,
            "second_ms": SECOND_MS}


def render_page(task: str, n_trials: int, practice: int, crowd_form: bool, slot: Mapping[str, str]) -> str:
    """The page; slot maps every trial column (item1, ref1, ...) to its value or placeholder."""
    return environment().get_template("task_page.html").render(
        page_values(task, n_trials, practice, crowd_form, slot))


def render_served_page(task: str, n_trials: int, practice: int, slot: Mapping[str, str], config: dict) -> str:
    """The page as `bapps-build serve` sends it (no crowd form), with config for its script."""
    return environment().get_template("served_task_page.html").render(
        page_values(task, n_trials, practice, False, slot), config=config)
