"""Readers of crowd results files, each giving the same long table: one judgment per row.

Formats (docs/crowd.md, "Ingest"):
- MTurk batch results CSV, one row per assignment, answers in any of the three shapes seen in
  real exports: plain fields (`Answer.choice1`), flattened Crowd HTML Elements objects
  (`Answer.choice1.label`, or `Answer.choice1.left` = true), or one JSON column
  `Answer.taskAnswers`. Turkle's variant lacks AssignmentStatus/Approve/Reject.
- Toloka results TSV, one row per task: `INPUT:item`, `OUTPUT:choice`, `ASSIGNMENT:worker_id`,
  `ASSIGNMENT:assignment_id`, `ASSIGNMENT:status`.
- Generic long format, CSV or JSON Lines: `worker, item, response` (+ `assignment`, `side`,
  `time_ms`, `status`, `submitted`, `timing`).

Status of an assignment, by the export's own times (never by the order files are read in):
every judgment carries (status_rank, status_time, rejected), and of two downloads of one
assignment the greater (rank, time, rejected) wins:
- rank 2, the platform's decision: MTurk `AssignmentStatus` Approved / Rejected at its
  `ApprovalTime` / `RejectionTime`; Toloka `ASSIGNMENT:status` APPROVED (ACCEPTED) / REJECTED at
  `ASSIGNMENT:accepted` / `ASSIGNMENT:rejected`. A rejected assignment approved later (both
  platforms allow it) is approved: its approval time is the later one.
- rank 1, the requester's own mark on an assignment still Submitted: MTurk's `Approve` /
  `Reject` columns filled in (the reviewed copy to upload), Toloka's `ACCEPT:verdict` (+ / -),
  the generic `status` column. It beats the download it was made from, never a decision the
  platform has recorded since.
- rank 0, submitted and not yet reviewed (time: `SubmitTime`, `ASSIGNMENT:submitted`).
A missing or empty time column sorts before every time; when nothing orders two statuses the
rejection stands. Times are stored as UTC ISO 8601 (MTurk's "Tue Nov 24 10:15:45 PST 2026",
ISO 8601 with or without a zone, taken as UTC without one, as Toloka writes them).
`submitted` (MTurk `SubmitTime`, Toloka `ASSIGNMENT:submitted`) orders one worker's repeated
judgments of an example (ingest keeps the latest).

A reader only parses: what an item id or a response means is decided later, against the
dataset (ingest.py). Problems are collected with file and line and raised together.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

from bapps_build.errors import UserError

# one assignment row of an MTurk export can hold thousands of characters of answers
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

MAX_PROBLEMS = 20
TRUE_FLAGS = {"true", "on", "1", "yes", "checked"}


class ResultsError(UserError, ValueError):
    """A results file cannot be read; the message names the file, the line and what to do."""


@dataclass
class RawJudgments:
    """Judgments as a file states them, one entry per judgment (parallel lists)."""

    path: str
    platform: str
    worker: List[str] = field(default_factory=list)
    assignment: List[str] = field(default_factory=list)
    item: List[str] = field(default_factory=list)
    response: List[str] = field(default_factory=list)
    side: List[str] = field(default_factory=list)  # where p0 was shown (2AFC): left / right / ""
    rejected: List[bool] = field(default_factory=list)
    time_ms: List[str] = field(default_factory=list)
    line: List[int] = field(default_factory=list)
    submitted: List[str] = field(default_factory=list)  # UTC ISO 8601 or ""
    status_time: List[str] = field(default_factory=list)  # UTC ISO 8601 or ""
    status_rank: List[int] = field(default_factory=list)  # 0 submitted, 1 requester's mark, 2 platform's decision
    timing: List[str] = field(default_factory=list)  # JND: "first,blank,second" ms as the page measured them
    records: int = 0  # rows of the file (assignments for MTurk)
    unanswered: int = 0  # trials a submitted assignment left empty
    problems: List[str] = field(default_factory=list)

    def add(self, worker, assignment, item, response, side, rejected, time_ms, line, submitted="", status_time="",
            status_rank=0, timing=""):
        self.worker.append(worker)
        self.assignment.append(assignment)
        self.item.append(item)
        self.response.append(response)
        self.side.append(side)
        self.rejected.append(rejected)
        self.time_ms.append(time_ms)
        self.line.append(line)
        self.submitted.append(submitted)
        self.status_time.append(status_time)
        self.status_rank.append(status_rank)
        self.timing.append(timing)

    def add_trials(self, worker, assignment, rejected, line, submitted, status_time, status_rank, items, responses,
                   sides, times_ms, timings):
        """The judgments of one assignment row: the per-trial columns given as lists, the rest once."""
        n = len(items)
        self.worker.extend([worker] * n)
        self.assignment.extend([assignment] * n)
        self.item.extend(items)
        self.response.extend(responses)
        self.side.extend(sides)
        self.rejected.extend([rejected] * n)
        self.time_ms.extend(times_ms)
        self.line.extend([line] * n)
        self.submitted.extend([submitted] * n)
        self.status_time.extend([status_time] * n)
        self.status_rank.extend([status_rank] * n)
        self.timing.extend(timings)

    def problem(self, line: Optional[int], text: str) -> None:
        where = f"{self.path}, line {line}" if line else self.path
        self.problems.append(f"{where}: {text}")

    def __len__(self):
        return len(self.item)


def read_text(path: Path) -> str:
    """The whole file as text; a UTF-8 byte-order mark (Excel's CSV) is dropped."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text (byte {exc.start}); export the results as UTF-8") from None


def csv_records(text: str, delimiter: str):
    """(start line, fields) of every record; quoted fields may hold newlines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    last = 0
    try:
        for fields in reader:
            start = last + 1
            last = reader.line_num
            yield start, fields
    except csv.Error as exc:
        raise ResultsError(f"line {reader.line_num}: {exc} (a quote left open?)") from None


def detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "generic-jsonl"
    first = text.split("\n", 1)[0]
    if "\t" in first and ("ASSIGNMENT:" in first or "INPUT:" in first or "OUTPUT:" in first):
        return "toloka"
    if suffix in (".csv", ".txt", ".tsv", ""):
        delimiter = "\t" if suffix == ".tsv" else ","
        header = next(csv.reader([first], delimiter=delimiter), [])
        names = {h.strip() for h in header}
        if any(h.startswith(("Answer.", "Input.")) for h in names) or "HITId" in names:
            return "mturk"
        if {"worker", "item", "response"} <= names:
            return "generic-csv" if delimiter == "," else "generic-tsv"
        raise ResultsError(f"{path}: not a results file this tool knows (an MTurk batch CSV has Answer.* "
                           f"columns, a Toloka TSV has INPUT:/OUTPUT:/ASSIGNMENT: columns, the generic format "
                           f"has worker, item, response); its header starts {', '.join(header[:6])!s}")
    raise ResultsError(f"{path}: unknown file type {suffix!r}; give an MTurk batch results .csv, a Toloka "
                       f".tsv, or a generic .csv / .jsonl (worker, item, response)")


def read_results(path) -> RawJudgments:
    """Read one results file of any supported format; raises ResultsError listing its problems."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no such file")
    text = read_text(path)
    fmt = detect_format(path, text)
    try:
        if fmt == "mturk":
            out = read_mturk(path, text)
        elif fmt == "toloka":
            out = read_toloka(path, text)
        elif fmt == "generic-jsonl":
            out = read_generic_jsonl(path, text)
        else:
            out = read_generic_csv(path, text, "\t" if fmt == "generic-tsv" else ",")
    except ResultsError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ResultsError(f"{path}, {exc}") from None
    if not out.problems:
        check_lengths(out)
    if out.problems:
        raise ResultsError(summarise_problems(out.problems))
    return out


# Real ids are short (MTurk's worker ids 12-14 characters, assignment ids 30, this tool's trial ids
# 13, a direct id <task>/<split>/<subset>/<stem> some 40): a longer value is a broken file, and
# carrying it on costs memory and makes every message that names it unreadable.
# (Other values are not stored by their width either, and every message cuts them: shorten().)
MAX_FIELD_CHARS = {"worker": 1000, "assignment": 1000, "item": 1000}
SHOWN_CHARS = 60


def shorten(value: str, limit: int = SHOWN_CHARS) -> str:
    """A value for a message: repr'd, cut to limit characters with its full length said."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def check_lengths(out: RawJudgments) -> None:
    """A problem, with its line and the value cut short, for every value over its column's limit.
    A pass of len() over each column (some milliseconds a million rows); lines only when one is over."""
    for name, limit in MAX_FIELD_CHARS.items():
        column = getattr(out, name)
        if not column or max(map(len, column)) <= limit:
            continue
        over, lines = [], set()
        for k, v in enumerate(column):
            if len(v) > limit and out.line[k] not in lines:  # once per line (an MTurk row holds many trials)
                lines.add(out.line[k])
                over.append(k)
        for k in over[:MAX_PROBLEMS]:
            out.problem(out.line[k], f"the {name} id {shorten(column[k])} is over the limit of "
                                     f"{limit:,} characters: not a value of a results file (a broken quote, a "
                                     f"column shifted?)")
        if len(over) > MAX_PROBLEMS:
            out.problem(None, f"... and {len(over) - MAX_PROBLEMS} more values of {name} over the limit")


# ---------------------------------------------------------------- times and statuses

# MTurk writes times in US Pacific time with the zone's abbreviation ("Tue Nov 24 10:15:45 PST 2026")
ZONE_HOURS = {"UTC": 0, "GMT": 0, "Z": 0, "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6, "CDT": -5,
              "EST": -5, "EDT": -4}
PLAIN_FORMATS = ("%a %b %d %H:%M:%S %Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S")
RANK_SUBMITTED, RANK_MARK, RANK_DECISION = 0, 1, 2


def parse_time(text: str, _cache: Dict[str, str] = {}) -> str:  # noqa: B006 (a cache on purpose)
    """A platform's time as UTC ISO 8601 ("2026-11-24T18:15:45.000Z", comparable as text); "" for
    an empty cell; ValueError when the text is no time this reader knows."""
    text = text.strip()
    if not text:
        return ""
    hit = _cache.get(text)
    if hit is not None:
        return hit
    dt = None
    parts = text.split()
    if len(parts) == 6 and parts[4].upper() in ZONE_HOURS:  # MTurk
        dt = datetime.strptime(" ".join(parts[:4] + parts[5:]), "%a %b %d %H:%M:%S %Y")
        dt = dt.replace(tzinfo=timezone(timedelta(hours=ZONE_HOURS[parts[4].upper()])))
    else:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            for fmt in PLAIN_FORMATS:
                try:
                    dt = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
    if dt is None:
        raise ValueError(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    out = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    if len(_cache) < 100_000:
        _cache[text] = out
    return out


def row_time(out: "RawJudgments", line: int, row: List[str], header: List[str], col: Optional[int]) -> str:
    """The time in column col of a row, or "" (no such column, empty cell); a problem when unreadable."""
    if col is None:
        return ""
    try:
        return parse_time(row[col])
    except ValueError:
        out.problem(line, f"column {header[col]}: {row[col][:60]!r} is not a time this reader knows (MTurk's "
                          f"'Tue Nov 24 10:15:45 PST 2026' or ISO 8601 such as 2026-11-24T18:15:45); re-download "
                          f"the file from the platform rather than a copy re-saved with another date format")
        return None


def summarise_problems(problems: List[str]) -> str:
    shown = "\n  ".join(problems[:MAX_PROBLEMS])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    return f"{len(problems)} problem(s); nothing was written:\n  {shown}{more}"


def require_columns(path, header: List[str], needed, hint: str) -> Dict[str, int]:
    index = {}
    for k, name in enumerate(header):
        index.setdefault(name.strip(), k)
    missing = [c for c in needed if c not in index]
    if missing:
        raise ResultsError(f"{path}: no column {', '.join(repr(m) for m in missing)} ({hint})")
    return index


# ---------------------------------------------------------------- MTurk

TRIAL_FIELD = re.compile(r"^(item|choice|p0side|rt|timing)(\d*)(?:\.(.+))?$")
# crowd-radio-group: one crowd-radio-button per answer, named by the page ("left1", "same3"), each
# giving {"<its value>": true|false}; flattened: `Answer.left1.left` = true
RADIO_FIELD = re.compile(r"^([A-Za-z][A-Za-z_-]*?)(\d+)\.([^.]+)$")
FLAG_WORDS = {"on", "true", "value", "checked", "selected", "yes"}


def radio_option(stem: str, option: str) -> str:
    """The answer a radio button stands for: its value's name ("left"), or its own name's stem when
    the value is only a flag ("left1": {"on": true} -> "left")."""
    return stem if option.strip().lower() in FLAG_WORDS else option


def flatten(value, prefix="") -> Dict[str, str]:
    """{'choice1': {'label': 'left'}} -> {'choice1.label': 'left'} (the flatten-objects shape)."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif value is None:
        out[prefix] = ""
    else:
        out[prefix] = str(value)
    return out


def trial_answers(answers: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    """Answer fields grouped by trial suffix: {'1': {'choice': 'left', 'item': 'q..', ...}}.

    The response of a trial is `choice<i>` itself, its `.label`, or the one option flagged true
    among `choice<i>.<option>` (a radio group flattened to booleans)."""
    trials: Dict[str, Dict[str, str]] = {}
    for key, value in answers.items():
        m = TRIAL_FIELD.match(key)
        if not m:
            r = RADIO_FIELD.match(key)
            if r and value.strip().lower() in TRUE_FLAGS:
                t = trials.setdefault(r.group(2), {})
                t["choice"] = radio_option(r.group(1), r.group(3)) if not t.get("choice_flag") else "\0ambiguous"
                t["choice_flag"] = "1"
            continue
        name, suffix, sub = m.groups()
        t = trials.setdefault(suffix, {})
        if sub is None:
            t[name] = value
        elif name == "choice":
            if sub == "label":
                t["choice"] = value
            elif value.strip().lower() in TRUE_FLAGS:
                t["choice"] = sub if not t.get("choice_flag") else "\0ambiguous"
                t["choice_flag"] = "1"
    return trials


def answer_layout(answer_cols: Dict[str, int]) -> Dict[str, Dict]:
    """Where each trial's answer fields sit in the row, worked out once from the header:
    {suffix: {'choice': col, 'label': col, 'flags': [(option, col)], 'item': col, 'p0side': col, 'rt': col}}."""
    layout: Dict[str, Dict] = {}
    for name, col in answer_cols.items():
        m = TRIAL_FIELD.match(name)
        if not m:
            r = RADIO_FIELD.match(name)
            if r:  # a crowd-radio-button flattened: Answer.left1.left
                flags = layout.setdefault(r.group(2), {"flags": []})["flags"]
                flags.append((radio_option(r.group(1), r.group(3)), col))
            continue
        field_name, suffix, sub = m.groups()
        t = layout.setdefault(suffix, {"flags": []})
        if sub is None:
            t[field_name] = col
        elif field_name == "choice":
            if sub == "label":
                t["label"] = col
            else:
                t["flags"].append((sub, col))
    return layout


def choice_from_columns(row: List[str], t: Dict) -> str:
    """The trial's response from its columns: the field, its .label, or the one option flagged true."""
    col = t.get("choice")
    if col is not None and row[col].strip():
        return row[col].strip()
    col = t.get("label")
    if col is not None and row[col].strip():
        return row[col].strip()
    chosen = [option for option, c in t["flags"] if row[c].strip().lower() in TRUE_FLAGS]
    if len(chosen) > 1:
        return "\0ambiguous"
    return chosen[0] if chosen else ""


def records_with_header(path: Path, text: str, delimiter: str):
    """(the remaining records, the stripped header row) of a delimited results file."""
    records = csv_records(text, delimiter)
    try:
        _, header = next(records)
    except StopIteration:
        raise ResultsError(f"{path}: empty file") from None
    return records, [h.strip() for h in header]


def mturk_status(out: RawJudgments, line: int, row: List[str], header: List[str], cols: Dict[str, Optional[int]]):
    """(rejected, status_rank, status_time, submitted) of one assignment row, or None after a problem."""
    submitted = row_time(out, line, row, header, cols["SubmitTime"])
    status = row[cols["AssignmentStatus"]].strip().lower() if cols["AssignmentStatus"] is not None else ""
    if status in ("approved", "rejected"):
        rejected = status == "rejected"
        when = row_time(out, line, row, header, cols["RejectionTime" if rejected else "ApprovalTime"])
        rank = RANK_DECISION
    else:
        reject = cols["Reject"] is not None and bool(row[cols["Reject"]].strip())
        approve = cols["Approve"] is not None and bool(row[cols["Approve"]].strip())
        if reject and approve:
            out.problem(line, "both the Approve and the Reject column are filled in: clear one of them")
            return None
        rejected, rank, when = reject, (RANK_MARK if reject or approve else RANK_SUBMITTED), submitted
    if submitted is None or when is None:
        return None
    return rejected, rank, when or submitted, submitted


@dataclass
class MTurkColumns:
    """Where an MTurk batch results file keeps what the reader takes, found from its header."""

    header: List[str]
    worker: int
    assignment: int
    status: Dict[str, Optional[int]]  # AssignmentStatus, Approve, Reject and the times
    task_answers: Optional[int]  # Answer.taskAnswers (a JSON object per row)
    answers: Dict[str, int]  # Answer.<name> -> column, taskAnswers aside
    input_items: Dict[str, int]  # trial suffix -> Input.item<suffix>
    input_sides: Dict[str, int]  # trial suffix -> Input.p0side<suffix>
    plan: list  # per trial: (suffix, where its answer is, Input.item column, Input.p0side column)


def mturk_columns(path: Path, header: List[str]) -> MTurkColumns:
    index = require_columns(path, header, ["WorkerId", "AssignmentId"],
                            "an MTurk batch results CSV names the worker and the assignment of every row")
    status = {name: index.get(name) for name in ("AssignmentStatus", "Approve", "Reject", "SubmitTime",
                                                  "ApprovalTime", "RejectionTime")}
    task_answers = index.get("Answer.taskAnswers")
    inputs = {h[6:]: k for k, h in enumerate(header) if h.startswith("Input.")}
    answers = {h[7:]: k for k, h in enumerate(header) if h.startswith("Answer.") and h != "Answer.taskAnswers"}
    input_items, input_sides = {}, {}
    for name, k in inputs.items():
        m = TRIAL_FIELD.match(name)
        if m and m.group(3) is None:
            if m.group(1) == "item":
                input_items[m.group(2)] = k
            elif m.group(1) == "p0side":
                input_sides[m.group(2)] = k
    if not answers and task_answers is None:
        raise ResultsError(f"{path}: no Answer.* column (is this the batch results file, not the input CSV?)")
    layout = answer_layout(answers)
    suffixes = sorted(set(layout) | set(input_items), key=lambda s: (len(s), s))
    plan = [(sfx, layout.get(sfx, {"flags": []}), input_items.get(sfx), input_sides.get(sfx)) for sfx in suffixes]
    return MTurkColumns(header, index["WorkerId"], index["AssignmentId"], status, task_answers, answers,
                        input_items, input_sides, plan)


def read_mturk(path: Path, text: str) -> RawJudgments:
    out = RawJudgments(str(path), "mturk")
    records, header = records_with_header(path, text, ",")
    cols = mturk_columns(path, header)
    eligible = 0  # rows that should hold answers (not rejected)
    json_keys: List[str] = []  # what Answer.taskAnswers held, for the error when nothing was found
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        out.records += 1
        eligible += read_mturk_row(out, line, row, cols, json_keys) is False
    if eligible and not len(out) and not out.problems:
        out.problem(None, no_mturk_answer(eligible, cols, json_keys))
    return out


def read_mturk_row(out: RawJudgments, line: int, row: List[str], cols: MTurkColumns,
                   json_keys: List[str]) -> Optional[bool]:
    """Add the trials of one assignment row; returns whether the assignment was rejected, None
    when the row was refused before its status was known."""
    if len(row) != len(cols.header):
        out.problem(line, f"{len(row)} fields where the header has {len(cols.header)} (a broken quote or a "
                          f"truncated download?)")
        return None
    worker, assignment = row[cols.worker].strip(), row[cols.assignment].strip()
    if not worker or not assignment:
        out.problem(line, "empty WorkerId or AssignmentId")
        return None
    status = mturk_status(out, line, row, cols.header, cols.status)
    if status is None:
        return None
    rejected, rank, status_time, submitted = status
    if cols.task_answers is not None and row[cols.task_answers].strip():
        trials = json_trials(out, line, row[cols.task_answers], {n: row[k] for n, k in cols.answers.items()},
                             json_keys)
        if trials is None:
            return rejected
        row_plan = [(sfx, trials.get(sfx, {}), cols.input_items.get(sfx), cols.input_sides.get(sfx))
                    for sfx in sorted(set(trials) | set(cols.input_items), key=lambda s: (len(s), s))]
        from_json = True
    else:
        row_plan, from_json = cols.plan, False
    items, choices, sides, rts, timings = mturk_trials(out, line, row, row_plan, from_json, rejected)
    if items:
        out.add_trials(worker, assignment, rejected, line, submitted, status_time, rank, items, choices, sides,
                       rts, timings)
    return rejected


def mturk_trials(out: RawJudgments, line: int, row: List[str], row_plan: list, from_json: bool, rejected: bool):
    """(items, choices, sides, rts, timings) of the answered trials of one row; an unanswered trial
    of an assignment that is not rejected is counted in out.unanswered."""
    items, choices, sides, rts, timings = [], [], [], [], []
    for suffix, t, item_col, side_col in row_plan:
        item, choice, side, rt, timing = trial_fields(row, t, from_json)
        if not item and item_col is not None:
            item = row[item_col].strip()
        if choice == "\0ambiguous":
            out.problem(line, f"trial {suffix or 1}: more than one answer of trial {suffix or 1} is true")
            continue
        if not item:
            if choice:
                out.problem(line, f"trial {suffix or 1}: an answer without an item id (no Answer.item{suffix} "
                                  f"or Input.item{suffix})")
            continue
        if not choice:
            if not rejected:
                out.unanswered += 1
            continue
        if not side and side_col is not None:
            side = row[side_col].strip()
        items.append(item)
        choices.append(choice)
        sides.append(side)
        rts.append(rt)
        timings.append(timing)
    return items, choices, sides, rts, timings


def trial_fields(row: List[str], t: Dict, from_json: bool):
    """(item, choice, side, rt, timing) of one trial: from its JSON object, or from its columns."""
    if from_json:
        return tuple((t.get(key) or "").strip() for key in ("item", "choice", "p0side", "rt", "timing"))
    item = row[t["item"]].strip() if "item" in t else ""
    side = row[t["p0side"]].strip() if "p0side" in t else ""
    rt = row[t["rt"]].strip() if "rt" in t else ""
    timing = row[t["timing"]].strip() if "timing" in t else ""
    return item, choice_from_columns(row, t), side, rt, timing


def no_mturk_answer(eligible: int, cols: MTurkColumns, json_keys: List[str]) -> str:
    seen = [f"Answer.{n}" for n in cols.answers] + (["Answer.taskAnswers"] if cols.task_answers is not None else [])
    keys = f" (its objects hold {', '.join(sorted(set(json_keys))[:12])})" if json_keys else ""
    return (f"no answer found in {eligible} assignment(s) that are not rejected: the answer columns "
            f"are {', '.join(seen[:12])}{' ...' if len(seen) > 12 else ''}{keys}; this reader takes "
            f"a trial's answer from Answer.choice<i> (or its .label, or the one option of "
            f"choice<i>.<option> that is true), from a radio button <name><i> = {{<answer>: true}} "
            f"(crowd-radio-group), with its item id in Answer.item<i> or Input.item<i>; rename the "
            f"page's fields to match, or convert the file to the generic format (worker, item, "
            f"response)")


def json_trials(out: RawJudgments, line: int, text: str, plain: Dict[str, str], keys_seen: Optional[List] = None):
    """The trials of one Answer.taskAnswers cell (plus any plain Answer.* fields of the row)."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        out.problem(line, f"Answer.taskAnswers is not valid JSON ({exc.msg})")
        return None
    if isinstance(parsed, list):
        if len(parsed) != 1 or not isinstance(parsed[0], dict):
            out.problem(line, "Answer.taskAnswers should hold a list with one object")
            return None
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        out.problem(line, "Answer.taskAnswers should hold an object")
        return None
    if keys_seen is not None and len(keys_seen) < 50:
        keys_seen.extend(list(parsed)[:50])
    answers = dict(plain)
    answers.update(flatten(parsed))
    return trial_answers(answers)


# ---------------------------------------------------------------- Toloka

TOLOKA_RESPONSE = ("OUTPUT:choice", "OUTPUT:response", "OUTPUT:result")


def toloka_status(out: RawJudgments, line: int, row: List[str], header: List[str], cols: Dict[str, Optional[int]]):
    """(rejected, status_rank, status_time, submitted, answers expected) of one task row, or None after a problem."""
    status = row[cols["ASSIGNMENT:status"]].strip().upper() if cols["ASSIGNMENT:status"] is not None else ""
    submitted = row_time(out, line, row, header, cols["ASSIGNMENT:submitted"])
    if submitted == "":
        submitted = row_time(out, line, row, header, cols["ASSIGNMENT:started"])
    if submitted is None:
        return None
    if status in ("APPROVED", "ACCEPTED", "REJECTED"):
        rejected = status == "REJECTED"
        when = row_time(out, line, row, header, cols["ASSIGNMENT:rejected" if rejected else "ASSIGNMENT:accepted"])
        if when is None:
            return None
        return rejected, RANK_DECISION, when or submitted, submitted, True
    verdict = row[cols["ACCEPT:verdict"]].strip() if cols["ACCEPT:verdict"] is not None else ""
    if verdict not in ("", "+", "-"):
        out.problem(line, f"ACCEPT:verdict {verdict!r}: Toloka's review verdicts are + (accept) and - (reject)")
        return None
    rank = RANK_MARK if verdict else RANK_SUBMITTED
    return verdict == "-", rank, submitted, submitted, status not in ("SKIPPED", "EXPIRED", "ACTIVE")


TOLOKA_TIMES = ("ASSIGNMENT:status", "ASSIGNMENT:started", "ASSIGNMENT:submitted", "ASSIGNMENT:accepted",
                "ASSIGNMENT:rejected", "ACCEPT:verdict")


def read_toloka(path: Path, text: str) -> RawJudgments:
    out = RawJudgments(str(path), "toloka")
    records, header = records_with_header(path, text, "\t")
    index = require_columns(path, header, ["INPUT:item", "ASSIGNMENT:worker_id", "ASSIGNMENT:assignment_id"],
                            "a Toloka results TSV of a task set made by `bapps-build tasks`")
    response_col = next((index[c] for c in TOLOKA_RESPONSE if c in index), None)
    if response_col is None:
        seen = [h for h in header if h.startswith("OUTPUT:")]
        raise ResultsError(f"{path}: no answer column ({' or '.join(TOLOKA_RESPONSE)}); its OUTPUT columns are "
                           f"{', '.join(seen) or 'none'}: name the output field of the task interface choice")
    side_col = index.get("OUTPUT:p0side", index.get("INPUT:p0side"))
    timing_col = index.get("OUTPUT:timing")
    cols = {name: index.get(name) for name in TOLOKA_TIMES}
    width = len(header)
    eligible = 0
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        out.records += 1
        if len(row) != width:
            out.problem(line, f"{len(row)} fields where the header has {width}")
            continue
        status = toloka_status(out, line, row, header, cols)
        if status is None:
            continue
        rejected, rank, status_time, submitted, expected = status
        eligible += expected and not rejected
        response = row[response_col].strip()
        if not response:
            if not rejected:
                out.unanswered += 1  # skipped or expired task suites too
            continue
        worker, assignment = row[index["ASSIGNMENT:worker_id"]].strip(), row[index["ASSIGNMENT:assignment_id"]].strip()
        item = row[index["INPUT:item"]].strip()
        if not worker or not assignment or not item:
            out.problem(line, "empty worker id, assignment id or item")
            continue
        out.add(worker, assignment, item, response, row[side_col].strip() if side_col is not None else "",
                rejected, "", line, submitted, status_time, rank,
                row[timing_col].strip() if timing_col is not None else "")
    if eligible and not len(out) and not out.problems:
        out.problem(None, f"no answer found in {eligible} submitted task(s): column {header[response_col]} is empty "
                          f"in every row")
    return out


# ---------------------------------------------------------------- generic

GENERIC_HINT = ("the generic format has one judgment per row: worker, item, response (+ assignment, side, time_ms, "
                "status, submitted, timing)")


def generic_rejected(status: str) -> bool:
    return status.strip().lower() in ("rejected", "reject")


def generic_rank(status: str) -> int:
    """A status written into a generic file is the requester's own mark (rank 1); none: submitted."""
    return RANK_MARK if status.strip().lower() in ("rejected", "reject", "approved", "approve", "accepted") else 0


def generic_times(out: RawJudgments, values: List[str], lines: List[int]) -> List[str]:
    times = []
    for v, line in zip(values, lines):
        try:
            times.append(parse_time(v))
        except ValueError:
            out.problem(line, f"submitted {v[:60]!r} is not a time (ISO 8601, e.g. 2026-11-24T18:15:45Z)")
            times.append("")
    return times


def read_generic_csv(path: Path, text: str, delimiter: str) -> RawJudgments:
    """Column-wise: the records are read in one pass, then each column is taken whole (a call per
    row of Python would cost more than the parsing itself on a million rows)."""
    out = RawJudgments(str(path), "generic")
    header, records, starts = csv_table(path, text, delimiter)
    index = require_columns(path, header, ["worker", "item", "response"], GENERIC_HINT)
    records, starts = drop_misshapen_records(out, records, starts, len(header))
    out.records += len(records)
    if not records:
        return out
    columns = list(zip(*records))

    def column(name):
        k = index.get(name)
        return list(map(str.strip, columns[k])) if k is not None else [""] * len(records)

    worker, item, response = column("worker"), column("item"), column("response")
    assignment, side, time_ms = column("assignment"), column("side"), column("time_ms")
    submitted, timing = column("submitted"), column("timing")
    status = index.get("status")
    rejected = [generic_rejected(v) for v in columns[status]] if status is not None else [False] * len(records)
    rank = [generic_rank(v) for v in columns[status]] if status is not None else [0] * len(records)
    if "submitted" in index:
        submitted = generic_times(out, submitted, starts)
    answered = [k for k, r in enumerate(response) if r]
    out.unanswered = len(records) - len(answered)
    empty = [k for k in answered if not worker[k] or not item[k]]
    for k in empty[:MAX_PROBLEMS]:
        out.problem(starts[k], "empty worker or item")
    if empty:
        return out
    if len(answered) < len(records):
        pick = lambda col: [col[k] for k in answered]  # noqa: E731
        worker, assignment, item, response, side, rejected, time_ms, starts, submitted, timing, rank = map(
            pick, (worker, assignment, item, response, side, rejected, time_ms, starts, submitted, timing, rank))
    out.worker, out.assignment, out.item, out.response = worker, assignment, item, response
    out.side, out.rejected, out.time_ms, out.line = side, rejected, time_ms, starts
    out.submitted, out.status_time, out.status_rank, out.timing = submitted, submitted, rank, timing
    return out


def csv_table(path: Path, text: str, delimiter: str):
    """(header, records, the line each record starts on) of a delimited text, in one pass."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records, ends = [], []
    keep, end = records.append, ends.append
    try:
        header = next(reader, None)
        if header is None:
            raise ResultsError(f"{path}: empty file")
        header_end = reader.line_num
        for record in reader:
            keep(record)
            end(reader.line_num)
    except csv.Error as exc:
        raise ResultsError(f"{path}, line {reader.line_num}: {exc} (a quote left open?)") from None
    starts = [header_end + 1] + [e + 1 for e in ends[:-1]]
    return [h.strip() for h in header], records, starts


def drop_misshapen_records(out: RawJudgments, records: list, starts: List[int], width: int):
    """The records with as many fields as the header (and their lines); every other one that is
    not blank is counted and is a problem."""
    if all(len(r) == width for r in records):
        return records, starts
    good = []
    for record, line in zip(records, starts):
        if len(record) == width:
            good.append((record, line))
        elif record and not (len(record) == 1 and not record[0].strip()):
            out.records += 1
            out.problem(line, f"{len(record)} fields where the header has {width}")
    return [r for r, _ in good], [line for _, line in good]


def read_generic_jsonl(path: Path, text: str) -> RawJudgments:
    out = RawJudgments(str(path), "generic")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a .json file holding one array of objects
        try:
            objects = [(None, o) for o in json.loads(stripped)]
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    else:
        objects = []
        for n, raw in enumerate(text.split("\n"), 1):
            if not raw.strip():
                continue
            try:
                objects.append((n, json.loads(raw)))
            except json.JSONDecodeError as exc:
                out.problem(n, f"not valid JSON ({exc.msg})")
    for n, obj in objects:
        out.records += 1
        if not isinstance(obj, dict):
            out.problem(n, "each line must be a JSON object")
            continue
        missing = [k for k in ("worker", "item", "response") if k not in obj]
        if missing:
            out.problem(n, f"no {', '.join(missing)} ({GENERIC_HINT})")
            continue
        response = obj["response"]
        if response is None or response == "":
            out.unanswered += 1
            continue
        if isinstance(response, bool):
            response = "1" if response else "0"
        worker, item = str(obj["worker"]).strip(), str(obj["item"]).strip()
        if not worker or not item:
            out.problem(n, "empty worker or item")
            continue
        time_ms = obj.get("time_ms", "")
        status = str(obj.get("status", "") or "")
        try:
            submitted = parse_time(str(obj.get("submitted", "") or ""))
        except ValueError:
            out.problem(n, f"submitted {str(obj['submitted'])[:60]!r} is not a time (ISO 8601)")
            continue
        timing = obj.get("timing", "")
        if isinstance(timing, list):
            timing = ",".join(str(x) for x in timing)
        out.add(worker, str(obj.get("assignment", "") or ""), item, str(response).strip(),
                str(obj.get("side", "") or "").strip(), generic_rejected(status),
                "" if time_ms is None else str(time_ms), n or 0, submitted, submitted, generic_rank(status),
                "" if timing is None else str(timing).strip())
    return out
