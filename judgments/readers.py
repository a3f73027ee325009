"""Readers of crowd results files, each giving the same long table: one judgment per row.

Formats (see shared spec crowd.md):
- MTurk batch results CSV, one row per assignment, answers in any of the three shapes seen in
  real exports: plain fields (`Answer.choice1`), flattened Crowd HTML Elements objects
  (`Answer.choice1.label`, or `Answer.choice1.left` = true), or one JSON column
  `Answer.taskAnswers`. Turkle's variant lacks AssignmentStatus/Approve/Reject.
- Toloka results TSV, one row per task: `INPUT:item`, `OUTPUT:choice`, `ASSIGNMENT:worker_id`,
  `ASSIGNMENT:assignment_id`, `ASSIGNMENT:status`.
- Generic long format, CSV or JSON Lines: `worker, item, response` (+ `assignment`, `side`,
  `time_ms`, `status`).

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
from pathlib import Path
from typing import Dict, List, Optional

# one assignment row of an MTurk export can hold thousands of characters of answers
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

MAX_PROBLEMS = 20
TRUE_FLAGS = {"true", "on", "1", "yes", "checked"}


class ResultsError(ValueError):
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
    records: int = 0  # rows of the file (assignments for MTurk)
    unanswered: int = 0  # trials a submitted assignment left empty
    problems: List[str] = field(default_factory=list)

    def add(self, worker, assignment, item, response, side, rejected, time_ms, line):
        self.worker.append(worker)
        self.assignment.append(assignment)
        self.item.append(item)
        self.response.append(response)
        self.side.append(side)
        self.rejected.append(rejected)
        self.time_ms.append(time_ms)
        self.line.append(line)

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
    if out.problems:
        raise ResultsError(summarise_problems(out.problems))
    return out


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

TRIAL_FIELD = re.compile(r"^(item|choice|p0side|rt)(\d*)(?:\.(.+))?$")


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


def read_mturk(path: Path, text: str) -> RawJudgments:
    out = RawJudgments(str(path), "mturk")
    records, header = records_with_header(path, text, ",")
    index = require_columns(path, header, ["WorkerId", "AssignmentId"],
                            "an MTurk batch results CSV names the worker and the assignment of every row")
    status_col = index.get("AssignmentStatus")
    reject_col = index.get("Reject")
    task_answers_col = index.get("Answer.taskAnswers")
    inputs = {h[6:]: k for k, h in enumerate(header) if h.startswith("Input.")}
    answer_cols = {h[7:]: k for k, h in enumerate(header) if h.startswith("Answer.") and h != "Answer.taskAnswers"}
    input_items, input_sides = {}, {}
    for name, k in inputs.items():
        m = TRIAL_FIELD.match(name)
        if m and m.group(3) is None:
            if m.group(1) == "item":
                input_items[m.group(2)] = k
            elif m.group(1) == "p0side":
                input_sides[m.group(2)] = k
    if not answer_cols and task_answers_col is None:
        raise ResultsError(f"{path}: no Answer.* column (is this the batch results file, not the input CSV?)")
    layout = answer_layout(answer_cols)
    suffixes = sorted(set(layout) | set(input_items), key=lambda s: (len(s), s))
    plan = [(sfx, layout.get(sfx, {"flags": []}), input_items.get(sfx), input_sides.get(sfx)) for sfx in suffixes]
    width = len(header)
    worker_col, assignment_col = index["WorkerId"], index["AssignmentId"]
    add = out.add
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        out.records += 1
        if len(row) != width:
            out.problem(line, f"{len(row)} fields where the header has {width} (a broken quote or a "
                              f"truncated download?)")
            continue
        worker, assignment = row[worker_col].strip(), row[assignment_col].strip()
        status = row[status_col].strip().lower() if status_col is not None else ""
        rejected = status == "rejected" or (reject_col is not None and bool(row[reject_col].strip()))
        if not worker or not assignment:
            out.problem(line, "empty WorkerId or AssignmentId")
            continue
        if task_answers_col is not None and row[task_answers_col].strip():
            trials = json_trials(out, line, row[task_answers_col], {n: row[k] for n, k in answer_cols.items()})
            if trials is None:
                continue
            row_plan = [(sfx, trials.get(sfx, {}), input_items.get(sfx), input_sides.get(sfx))
                        for sfx in sorted(set(trials) | set(input_items), key=lambda s: (len(s), s))]
            from_json = True
        else:
            row_plan, from_json = plan, False
        for suffix, t, item_col, side_col in row_plan:
            if from_json:
                item, choice = (t.get("item") or "").strip(), (t.get("choice") or "").strip()
                side, rt = (t.get("p0side") or "").strip(), (t.get("rt") or "").strip()
            else:
                item = row[t["item"]].strip() if "item" in t else ""
                choice = choice_from_columns(row, t)
                side = row[t["p0side"]].strip() if "p0side" in t else ""
                rt = row[t["rt"]].strip() if "rt" in t else ""
            if not item and item_col is not None:
                item = row[item_col].strip()
            if choice == "\0ambiguous":
                out.problem(line, f"trial {suffix or 1}: more than one option of choice{suffix} is true")
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
            add(worker, assignment, item, choice, side, rejected, rt, line)
    return out


def json_trials(out: RawJudgments, line: int, text: str, plain: Dict[str, str]):
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
    answers = dict(plain)
    answers.update(flatten(parsed))
    return trial_answers(answers)


# ---------------------------------------------------------------- Toloka

TOLOKA_RESPONSE = ("OUTPUT:choice", "OUTPUT:response", "OUTPUT:result")


def read_toloka(path: Path, text: str) -> RawJudgments:
    out = RawJudgments(str(path), "toloka")
    records, header = records_with_header(path, text, "\t")
    index = require_columns(path, header, ["INPUT:item", "ASSIGNMENT:worker_id", "ASSIGNMENT:assignment_id"],
                            "a Toloka results TSV of a task set made by `bapps-build tasks`")
    response_col = next((index[c] for c in TOLOKA_RESPONSE if c in index), None)
    if response_col is None:
        raise ResultsError(f"{path}: no answer column ({' or '.join(TOLOKA_RESPONSE)})")
    side_col = index.get("OUTPUT:p0side", index.get("INPUT:p0side"))
    status_col = index.get("ASSIGNMENT:status")
    width = len(header)
    for line, row in records:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        out.records += 1
        if len(row) != width:
            out.problem(line, f"{len(row)} fields where the header has {width}")
            continue
        rejected = status_col is not None and row[status_col].strip().upper() == "REJECTED"
        response = row[response_col].strip()
        if not response:
            if not rejected:
                out.unanswered += 1  # skipped or expired task suites
            continue
        worker, assignment = row[index["ASSIGNMENT:worker_id"]].strip(), row[index["ASSIGNMENT:assignment_id"]].strip()
        item = row[index["INPUT:item"]].strip()
        if not worker or not assignment or not item:
            out.problem(line, "empty worker id, assignment id or item")
            continue
        out.add(worker, assignment, item, response, row[side_col].strip() if side_col is not None else "",
                rejected, "", line)
    return out


# ---------------------------------------------------------------- generic

GENERIC_HINT = "the generic format has one judgment per row: worker, item, response (+ assignment, side, time_ms, status)"


def generic_rejected(status: str) -> bool:
    return status.strip().lower() in ("rejected", "reject")


def read_generic_csv(path: Path, text: str, delimiter: str) -> RawJudgments:
    """Column-wise: the records are read in one pass, then each column is taken whole (a call per
    row of Python would cost more than the parsing itself on a million rows)."""
    out = RawJudgments(str(path), "generic")
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
    header = [h.strip() for h in header]
    index = require_columns(path, header, ["worker", "item", "response"], GENERIC_HINT)
    starts = [header_end + 1] + [e + 1 for e in ends[:-1]]
    width = len(header)
    if any(len(r) != width for r in records):
        good = []
        for record, line in zip(records, starts):
            if len(record) == width:
                good.append((record, line))
            elif record and not (len(record) == 1 and not record[0].strip()):
                out.records += 1
                out.problem(line, f"{len(record)} fields where the header has {width}")
        records = [r for r, _ in good]
        starts = [line for _, line in good]
    out.records += len(records)
    if not records:
        return out
    columns = list(zip(*records))

    def column(name):
        k = index.get(name)
        return list(map(str.strip, columns[k])) if k is not None else [""] * len(records)

    worker, item, response = column("worker"), column("item"), column("response")
    assignment, side, time_ms = column("assignment"), column("side"), column("time_ms")
    status = index.get("status")
    rejected = [generic_rejected(v) for v in columns[status]] if status is not None else [False] * len(records)
    answered = [k for k, r in enumerate(response) if r]
    out.unanswered = len(records) - len(answered)
    empty = [k for k in answered if not worker[k] or not item[k]]
    for k in empty[:MAX_PROBLEMS]:
        out.problem(starts[k], "empty worker or item")
    if empty:
        return out
    if len(answered) < len(records):
        pick = lambda col: [col[k] for k in answered]  # noqa: E731
        worker, assignment, item, response, side, rejected, time_ms, starts = map(
            pick, (worker, assignment, item, response, side, rejected, time_ms, starts))
    out.worker, out.assignment, out.item, out.response = worker, assignment, item, response
    out.side, out.rejected, out.time_ms, out.line = side, rejected, time_ms, starts
    return out


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
        out.add(worker, str(obj.get("assignment", "") or ""), item, str(response).strip(),
                str(obj.get("side", "") or "").strip(), generic_rejected(str(obj.get("status", "") or "")),
                "" if time_ms is None else str(time_ms), n or 0)
    return out
