"""The task pages as package data: Jinja2 templates whose values are escaped where they land.

A filled page (generic hit pages, `bapps-build serve`) carries each trial value as text: HTML
metacharacters in a value are escaped in attributes, and the settings of serve's script go
through tojson, so no value can close a script element or add markup. The browser side (the
page still works with such values) is in test_judgments_browser.py.
"""
import configparser
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from judgments.layouts import fill_template, render_layout, render_served_layout, template_variables, trial_columns
from judgments.layouts.page import environment

HOSTILE = "</script><bapps-evil>\"'&"
TEMPLATES = Path(__import__("judgments.layouts").layouts.__file__).parent / "templates"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each script element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(html):
    p = Elements()
    p.feed(html)
    p.close()
    return p


def row_for(task, n, value):
    """A row whose every trial value is `value` plus its column (2AFC sides stay valid)."""
    row = {}
    for i in range(1, n + 1):
        for c in trial_columns(task, i):
            row[c] = "left" if c.startswith("p0side") else f"{value}{c}"
    return row


@pytest.mark.parametrize("task", ["2afc", "jnd"])
def test_placeholder_page_names_every_trial_column(task):
    page = render_layout(task, 3, 1, crowd_form=True)
    columns = sorted(c for i in (1, 2, 3) for c in trial_columns(task, i))
    assert template_variables(page) == columns
    assert page.count("${") == len(columns)  # nothing else MTurk would take for a variable
    assert "@@" not in page and "{{" not in page and "{%" not in page


@pytest.mark.parametrize("task", ["2afc", "jnd"])
@pytest.mark.parametrize("crowd_form", [True, False])
def test_a_plain_row_fills_the_page_exactly_as_mturk_would(task, crowd_form):
    row = row_for(task, 4, "images/x")
    layout = render_layout(task, 4, 2, crowd_form=crowd_form)
    assert render_layout(task, 4, 2, crowd_form=crowd_form, row=row) == fill_template(layout, row)


@pytest.mark.parametrize("task", ["2afc", "jnd"])
def test_metacharacters_in_row_values_are_escaped_text(task):
    row = row_for(task, 2, HOSTILE)
    page = render_layout(task, 2, 0, crowd_form=False, row=row)
    assert HOSTILE not in page and "<bapps-evil" not in page
    assert "&lt;/script&gt;&lt;bapps-evil&gt;&#34;&#39;&amp;" in page
    parsed = parse(page)
    plain = parse(render_layout(task, 2, 0, crowd_form=False))
    assert [t for t, _ in parsed.tags] == [t for t, _ in plain.tags]  # no element added or closed early
    trials = [a for t, a in parsed.tags if t == "div" and a.get("class") == "trial"]
    inputs = {a["name"]: a["value"] for t, a in parsed.tags if t == "input" and "name" in a}
    for i, attrs in enumerate(trials, 1):  # the browser reads back exactly the row's values
        assert inputs[f"item{i}"] == row[f"item{i}"]
        slots = ("ref", "left", "right") if task == "2afc" else ("first", "second")
        assert {k: attrs[f"data-{k}"] for k in slots} == {k: row[f"{k}{i}"] for k in slots}


def test_a_row_without_a_column_of_the_page_is_an_error():
    row = row_for("jnd", 2, "x")
    del row["second2"]
    with pytest.raises(KeyError, match="second2"):
        render_layout("jnd", 2, 0, crowd_form=False, row=row)
    with pytest.raises(ValueError, match="unknown task"):
        render_layout("3afc", 2)


def test_served_page_config_cannot_close_its_script_element():
    config = {"token": HOSTILE, "offset": 1, "total": 3, "answer_url": "api/answer", "done_url": "done"}
    page = render_served_layout("2afc", 2, 0, row_for("2afc", 2, "images/x"), config)
    parsed = parse(page)
    configs = [a for t, a in parsed.tags if t == "script" and a.get("id") == "bapps-serve-config"]
    assert len(configs) == 1 and "<bapps-evil" not in page
    scripts = parsed.scripts
    assert json.loads(next(s for s in scripts if s.lstrip().startswith("{"))) == config
    assert page.count("</script>") == len(scripts)
    assert 'id="serve-status"' in page and page.index('id="serve-status"') > page.index('id="trials"')


def test_templates_are_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["judgments.layouts"].split(",")]
    files = sorted(p.name for p in TEMPLATES.iterdir())
    assert files and all(any(Path(f"templates/{f}").match(p) for p in patterns) for f in files)
    assert set(environment().list_templates()) == set(files)
    assert not [f for f in files if "@@" in (TEMPLATES / f).read_text(encoding="utf-8")]
