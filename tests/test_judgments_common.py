"""Shared by the judgments tests: a tiny dataset (built once per session, copied per test) and
writers of realistic results files (MTurk in its three answer shapes and Turkle's variant,
Toloka, generic CSV / JSON Lines), as the platforms write them."""
import csv
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from bapps_build import BuildConfig, run_build

MTURK_HEAD = ["HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "CreationTime", "MaxAssignments",
              "RequesterAnnotation", "AssignmentDurationInSeconds", "AutoApprovalDelayInSeconds", "Expiration",
              "NumberOfSimilarHITs", "LifetimeInSeconds", "AssignmentId", "WorkerId", "AssignmentStatus",
              "AcceptTime", "SubmitTime", "AutoApprovalTime", "ApprovalTime", "RejectionTime", "RequesterFeedback",
              "WorkTimeInSeconds", "LifetimeApprovalRate", "Last30DaysApprovalRate", "Last7DaysApprovalRate"]
TURKLE_DROPS = ("AssignmentStatus", "Approve", "Reject")

_BUILT = {}


def build_tiny_dataset():
    """2AFC val (12 triplets) and JND val (8 pairs) from the bundled sample photos, built once."""
    if "root" not in _BUILT:
        root = Path(tempfile.mkdtemp(prefix="bapps-judgments-")) / "dataset"
        run_build(BuildConfig(n=12, task="2afc", split="val", val_fraction=1.0, seed=3), root, workers=1,
                  progress=False)
        run_build(BuildConfig(n=8, task="jnd", split="val", val_fraction=1.0, seed=4), root, workers=1,
                  progress=False)
        _BUILT["root"] = root
    return _BUILT["root"]


@pytest.fixture
def tiny_dataset(tmp_path):
    target = tmp_path / "dataset"
    shutil.copytree(build_tiny_dataset(), target)
    return target


def read_input_rows(tasks_dir):
    with open(Path(tasks_dir) / "mturk" / "input.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def trial_count(row):
    return sum(1 for k in row if k.startswith("item"))


def right_answer(record, item, p0side):
    """What a careful worker answers on the page: 2AFC the side (left/right) of the closer patch."""
    info = record["items"][item]
    if record["task"] == "jnd":
        return info.get("expected", "same")
    expected = info.get("expected", "p0")  # test triplets: this worker prefers p0 unless told otherwise
    return p0side if expected == "p0" else ("right" if p0side == "left" else "left")


def flip(side):
    return "right" if side == "left" else "left"


def mturk_csv(record, rows, assignments, shape="plain", turkle=False, bom=False, feedback=None):
    """A batch results CSV. assignments: [(hit index, worker, assignment id, status, answer_fn)] where
    answer_fn(item, p0side) gives the page's answer (left/right, same/different)."""
    n = trial_count(rows[0])
    input_cols = list(rows[0].keys())
    answers = []
    if shape == "plain":
        for i in range(1, n + 1):
            answers += [f"Answer.choice{i}", f"Answer.item{i}", f"Answer.rt{i}"]
            if record["task"] == "2afc":
                answers.append(f"Answer.p0side{i}")
    elif shape == "flatten":
        labels = ("left", "right") if record["task"] == "2afc" else ("same", "different")
        for i in range(1, n + 1):
            answers += [f"Answer.choice{i}.{labels[0]}", f"Answer.choice{i}.{labels[1]}"]
    else:
        answers = ["Answer.taskAnswers"]
    header = MTURK_HEAD + [f"Input.{c}" for c in input_cols] + answers + ["Approve", "Reject"]
    if turkle:
        header = [h for h in header if h not in TURKLE_DROPS]
    out = []
    for hit, worker, assignment, status, answer_fn in assignments:
        row = rows[hit]
        base = {h: "" for h in header}
        base.update({"HITId": f"HIT{hit:04d}", "AssignmentId": assignment, "WorkerId": worker,
                     "AssignmentStatus": status, "Title": "Which patch is more similar?",
                     "Description": "Compare image patches,\nthen choose", "Reward": "$0.50",
                     "RequesterFeedback": feedback or "", "MaxAssignments": "3"})
        for c in input_cols:
            base[f"Input.{c}"] = row[c]
        given = {}
        for i in range(1, n + 1):
            item, side = row[f"item{i}"], row.get(f"p0side{i}", "")
            given[i] = answer_fn(item, side)
        if shape == "plain":
            for i in range(1, n + 1):
                base[f"Answer.choice{i}"] = given[i]
                base[f"Answer.item{i}"] = row[f"item{i}"]
                base[f"Answer.rt{i}"] = str(900 + i)
                if record["task"] == "2afc":
                    base[f"Answer.p0side{i}"] = row[f"p0side{i}"]
        elif shape == "flatten":
            for i in range(1, n + 1):
                for label in labels:
                    base[f"Answer.choice{i}.{label}"] = "true" if given[i] == label else "false"
        else:
            obj = {}
            for i in range(1, n + 1):
                obj[f"choice{i}"] = {"label": given[i]}
                obj[f"item{i}"] = row[f"item{i}"]
            base["Answer.taskAnswers"] = json.dumps([obj])
        if status == "Rejected" and not turkle:
            base["Reject"] = "failed the checks"
        out.append(base)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\r\n")
    w.writeheader()
    for r in out:
        w.writerow({h: r[h] for h in header})
    text = buf.getvalue()
    return ("\ufeff" + text) if bom else text


def toloka_tsv(record, judgments):
    """judgments: [(worker, assignment, status, item, p0side, answer)]; one row per task, as Toloka writes."""
    header = ["INPUT:item", "INPUT:p0side", "OUTPUT:choice", "GOLDEN:choice", "HINT:text", "ASSIGNMENT:link",
              "ASSIGNMENT:assignment_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status", "ASSIGNMENT:started"]
    lines = ["\t".join(header)]
    for worker, assignment, status, item, side, answer in judgments:
        golden = ""
        lines.append("\t".join([item, side, answer, golden, "", f"https://toloka.example/{assignment}", assignment,
                                worker, status, "2024-01-01T10:00:00"]))
    return "\n".join(lines) + "\n"
