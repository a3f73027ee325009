"""Crowd results you can trust: statuses by the export's own times, answer shapes that
cannot be read, sentinels that cannot be spotted, one vote per person, JND timing, the report.

Every results file here is written the way the platform writes it: MTurk's "Download CSV"
(every field quoted, CRLF, a BOM for Excel's copy, times as "Tue Nov 24 10:15:45 PST 2026"),
Toloka's TSV with its ASSIGNMENT:* columns and ISO times.
"""
import csv
import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from judgments.catalog import resolve_subset
from judgments.cli import ingest
from judgments.ingest import IngestError, ingest_files
from judgments.tasks import TaskSettings, build_task_set
from test_judgments_common import (flip, mturk_csv, read_input_rows, right_answer, tiny_dataset,  # noqa: F401
                                   trial_count)

AFC = "2afc/val/traditional"
JND = "jnd/val/traditional"


def counts_of(dataset, subset=AFC):
    with open(Path(dataset) / subset / "judgments" / "counts.csv", newline="") as f:
        return {r["stem"]: (int(r.get("n_p1") or r.get("n_same")), int(r["n_total"])) for r in csv.DictReader(f)}


def mturk_time(day, hour, minute=0, second=0, zone="PST"):
    """MTurk's own format: 'Tue Nov 24 10:15:45 PST 2026' (Nov 2026: the 24th is a Tuesday)."""
    names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    weekday = names[(day - 22) % 7]  # Nov 22 2026 is a Sunday
    return f"{weekday} Nov {day:02d} {hour:02d}:{minute:02d}:{second:02d} {zone} 2026"


def download(record, rows, assignments, statuses, bom=False):
    """An MTurk batch results CSV as "Download CSV" writes it (every field quoted, CRLF).
    assignments: [(hit, worker, assignment id, answer_fn)]; statuses: assignment id -> dict of
    AssignmentStatus, SubmitTime, ApprovalTime, RejectionTime, Approve, Reject."""
    text = mturk_csv(record, rows, [(h, w, a, "Submitted", fn) for h, w, a, fn in assignments])
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    for r in table:
        r.update({"AcceptTime": mturk_time(24, 9), "AutoApprovalTime": mturk_time(27, 9), "Reject": ""})
        r.update(statuses[r["AssignmentId"]])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writeheader()
    w.writerows(table)
    return ("\ufeff" if bom else "") + buf.getvalue()


def taste(stem):
    return "p1" if int(stem) % 3 == 0 else "p0"


def worker_fn(record, want):
    """Sentinels right; test triplets: want(stem) -> p0/p1, answered on the page's sides."""
    def answer(item, side):
        info = record["items"][item]
        if info["kind"] == "test":
            return side if want(info["stem"]) == "p0" else flip(side)
        return right_answer(record, item, side)
    return answer


@pytest.fixture
def afc_batch(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, AFC)
    record = build_task_set(subset, tmp_path / "tasks",
                            TaskSettings("mturk", 3, 4, 0.2, 0, "https://example.org/img", 0, "val-batch"))
    return tiny_dataset, record, read_input_rows(tmp_path / "tasks")


def three_downloads(record, rows, tmp_path):
    """Per HIT two careful workers and a lazy one (p1 everywhere, sentinels right). An interim
    download (all Submitted), the requester's Excel-reviewed copy of it (lazy ones marked Reject,
    the rest Approve), the final download (lazy ones Rejected, except in HIT 0 where the requester
    approved the rejected assignment again a day later: it counts)."""
    assignments, interim, reviewed, final = [], {}, {}, {}
    for h in range(len(rows)):
        for w, want in (("WCAREFUL1", taste), ("WCAREFUL2", taste), ("WLAZY", lambda s: "p1")):
            a = f"3ASSIGN{h}{w}"
            assignments.append((h, w, a, worker_fn(record, want)))
            submitted = mturk_time(24, 10, 15, 45 + h)
            interim[a] = {"AssignmentStatus": "Submitted", "SubmitTime": submitted, "ApprovalTime": "",
                          "RejectionTime": ""}
            lazy = w == "WLAZY"
            reviewed[a] = dict(interim[a], **({"Reject": "answered p1 everywhere"} if lazy else {"Approve": "x"}))
            if lazy and h == 0:
                final[a] = {"AssignmentStatus": "Approved", "SubmitTime": submitted,
                            "RejectionTime": mturk_time(25, 8), "ApprovalTime": mturk_time(26, 8, zone="PST")}
            elif lazy:
                final[a] = {"AssignmentStatus": "Rejected", "SubmitTime": submitted, "RejectionTime": mturk_time(25, 8),
                            "ApprovalTime": "", "RequesterFeedback": "answered p1 everywhere"}
            else:
                final[a] = {"AssignmentStatus": "Approved", "SubmitTime": submitted, "ApprovalTime": mturk_time(25, 8),
                            "RejectionTime": ""}
    files = {"interim": ("Batch_4242_batch_results.csv", interim, False),
             "final": ("Batch_4242_batch_results (1).csv", final, False),
             "reviewed": ("reviewed.csv", reviewed, True)}
    out = {}
    for key, (name, statuses, bom) in files.items():
        path = tmp_path / "downloads" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(download(record, rows, assignments, statuses, bom=bom), encoding="utf-8", newline="")
        out[key] = path
    return out


def expected_after_review(record, rows):
    """Careful workers twice; the lazy worker's p1 only in HIT 0 (approved again)."""
    counts = {f"{k:06d}": [2 if taste(f"{k:06d}") == "p1" else 0, 2] for k in range(12)}
    for i in range(1, trial_count(rows[0]) + 1):
        info = record["items"][rows[0][f"item{i}"]]
        if info["kind"] == "test":
            counts[info["stem"]][0] += 1
            counts[info["stem"]][1] += 1
    return {k: tuple(v) for k, v in counts.items()}


def state(dataset, summary_or_none=None):
    from judgments.store import read_rows
    rows = read_rows(Path(dataset) / AFC / "judgments" / "rows.tsv")
    rejected = sorted({a for a, r in zip(rows.assignment, rows.rejected) if r})
    return counts_of(dataset), rejected


def test_several_downloads_in_one_command_equal_one_at_a_time_in_any_order(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    files = three_downloads(record, rows, tmp_path)
    pristine = tmp_path / "pristine"
    shutil.copytree(dataset, pristine)
    want_counts = expected_after_review(record, rows)
    want_rejected = sorted(f"3ASSIGN{h}WLAZY" for h in range(1, len(rows)))
    for order in itertools.permutations(["interim", "final", "reviewed"]):
        for together in (True, False):
            shutil.rmtree(dataset)
            shutil.copytree(pristine, dataset)
            if together:
                summary = ingest_files([files[k] for k in order], dataset)
                assert summary["subsets"][AFC]["rows"]["rejected"] == len(want_rejected) * trial_count(rows[0]), order
            else:
                for k in order:
                    ingest_files([files[k]], dataset)
            got_counts, got_rejected = state(dataset)
            assert got_rejected == want_rejected, (order, together)
            assert got_counts == want_counts, (order, together)


def test_reviewed_copy_rejects_until_the_platform_decides(afc_batch, tmp_path):
    """The interim download and the requester's reviewed copy of it (no final yet): the Reject
    marks stand whatever the order; the final download then decides (HIT 0's lazy one approved)."""
    dataset, record, rows = afc_batch
    files = three_downloads(record, rows, tmp_path)
    ingest_files([files["reviewed"]], dataset)
    summary = ingest_files([files["interim"]], dataset)
    assert summary["subsets"][AFC]["this_ingest"]["status_updates"] == 0
    assert state(dataset)[1] == sorted(f"3ASSIGN{h}WLAZY" for h in range(len(rows)))
    summary = ingest_files([files["final"]], dataset)
    assert summary["subsets"][AFC]["this_ingest"]["status_updates"] == trial_count(rows[0])  # HIT 0's lazy one
    assert state(dataset)[1] == sorted(f"3ASSIGN{h}WLAZY" for h in range(1, len(rows)))


TOLOKA_HEADER = ["INPUT:item", "INPUT:p0side", "INPUT:ref", "INPUT:left", "INPUT:right", "OUTPUT:choice",
                 "GOLDEN:choice", "HINT:text", "ASSIGNMENT:link", "ASSIGNMENT:task_id", "ASSIGNMENT:assignment_id",
                 "ASSIGNMENT:task_suite_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status", "ASSIGNMENT:started",
                 "ASSIGNMENT:submitted", "ASSIGNMENT:accepted", "ASSIGNMENT:rejected", "ASSIGNMENT:skipped",
                 "ASSIGNMENT:expired", "ASSIGNMENT:reward", "ACCEPT:verdict", "ACCEPT:comment"]


DAY_25 = "2026-11-25T08:00:00"  # Toloka's times: ISO 8601, no zone (UTC)


def toloka_export(record, rows, suites, statuses):
    """Toloka's "Download results" TSV. suites: [(hit, worker, assignment, answer_fn)];
    statuses: assignment -> {ASSIGNMENT:status, ASSIGNMENT:accepted, ...}."""
    lines = ["\t".join(TOLOKA_HEADER)]
    for h, worker, assignment, fn in suites:
        row = rows[h]
        for i in range(1, trial_count(row) + 1):
            item, side = row[f"item{i}"], row[f"p0side{i}"]
            values = {h_: "" for h_ in TOLOKA_HEADER}
            values.update({"INPUT:item": item, "INPUT:p0side": side, "INPUT:ref": row[f"ref{i}"],
                           "INPUT:left": row[f"left{i}"], "INPUT:right": row[f"right{i}"],
                           "OUTPUT:choice": fn(item, side), "ASSIGNMENT:link": f"https://toloka.ai/task/x/{assignment}",
                           "ASSIGNMENT:task_id": f"000{h}{i}", "ASSIGNMENT:assignment_id": assignment,
                           "ASSIGNMENT:task_suite_id": f"suite{h}", "ASSIGNMENT:worker_id": worker,
                           "ASSIGNMENT:started": "2026-11-24T10:00:00.120", "ASSIGNMENT:reward": "0.05"})
            if record["items"][item]["kind"] == "sentinel":
                values["GOLDEN:choice"] = right_answer(record, item, side)
            values.update(statuses[assignment])
            lines.append("\t".join(values[c] for c in TOLOKA_HEADER))
    return "\n".join(lines) + "\n"


def test_toloka_older_download_never_unrejects(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    suites, interim, final = [], {}, {}
    for h in range(len(rows)):
        for w, want in (("tw1", taste), ("tw2", taste), ("tlazy", lambda s: "p1")):
            a = f"00001d{h}{w}"
            suites.append((h, w, a, worker_fn(record, want)))
            interim[a] = {"ASSIGNMENT:status": "SUBMITTED", "ASSIGNMENT:submitted": f"2026-11-24T10:{h:02d}:00.500"}
            final[a] = dict(interim[a], **({"ASSIGNMENT:status": "REJECTED", "ASSIGNMENT:rejected": DAY_25,
                                            "ACCEPT:comment": "p1 everywhere"} if w == "tlazy" else
                                           {"ASSIGNMENT:status": "APPROVED", "ASSIGNMENT:accepted": DAY_25}))
    older = tmp_path / "assignments_from_pool_interim.tsv"
    newer = tmp_path / "assignments_from_pool_final.tsv"
    older.write_text(toloka_export(record, rows, suites, interim))
    newer.write_text(toloka_export(record, rows, suites, final))
    ingest_files([newer], dataset)
    after_final = state(dataset)
    ingest_files([older], dataset)  # the older download afterwards: changes nothing
    assert state(dataset) == after_final
    assert len(after_final[1]) == len(rows)
    want = {f"{k:06d}": (2 if taste(f"{k:06d}") == "p1" else 0, 2) for k in range(12)}
    assert after_final[0] == want
    # a reviewed copy with Toloka's ACCEPT:verdict (the file uploaded to review): '-' rejects a SUBMITTED one
    reviewed = {a: dict(s, **({"ACCEPT:verdict": "-"} if "tlazy" in a else {"ACCEPT:verdict": "+"}))
                for a, s in interim.items()}
    text = toloka_export(record, rows, suites, reviewed)
    path = tmp_path / "review.tsv"
    path.write_text(text)
    from judgments.readers import read_results
    raw = read_results(path)
    assert sum(raw.rejected) == trial_count(rows[0]) * len(rows) and set(raw.status_rank) == {1}


def test_toloka_downloads_in_one_command_any_order(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    suites, interim, final = [], {}, {}
    for h in range(len(rows)):
        for w, want in (("tw1", taste), ("tw2", taste), ("tlazy", lambda s: "p1")):
            a = f"00001d{h}{w}"
            suites.append((h, w, a, worker_fn(record, want)))
            interim[a] = {"ASSIGNMENT:status": "SUBMITTED", "ASSIGNMENT:submitted": f"2026-11-24T10:{h:02d}:00.500"}
            final[a] = dict(interim[a], **({"ASSIGNMENT:status": "REJECTED", "ASSIGNMENT:rejected": DAY_25}
                                           if w == "tlazy" else
                                           {"ASSIGNMENT:status": "APPROVED", "ASSIGNMENT:accepted": DAY_25}))
    older, newer = tmp_path / "interim.tsv", tmp_path / "final.tsv"
    older.write_text(toloka_export(record, rows, suites, interim))
    newer.write_text(toloka_export(record, rows, suites, final))
    pristine = tmp_path / "pristine"
    shutil.copytree(dataset, pristine)
    results = set()
    for order in ((older, newer), (newer, older)):
        shutil.rmtree(dataset)
        shutil.copytree(pristine, dataset)
        ingest_files(list(order), dataset)
        counts, rejected = state(dataset)
        results.add((json.dumps(counts, sort_keys=True), tuple(rejected)))
    assert len(results) == 1
    assert len(next(iter(results))[1]) == len(rows)


def test_an_unreadable_mturk_time_is_an_error_naming_line_and_column(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    files = three_downloads(record, rows, tmp_path)
    text = files["final"].read_text(encoding="utf-8").replace(mturk_time(25, 8), "sometime on Wednesday", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(IngestError, match=r"bad.csv, line \d+: column (ApprovalTime|RejectionTime): 'sometime on"):
        ingest_files([bad], dataset)
    assert not (dataset / AFC / "judgments" / "rows.tsv").exists()


# ---------------------------------------------------------------- answer shapes


def radio_download(record, rows, assignments, names):
    """Answer.taskAnswers from crowd-radio-group: [{"left1": {"left": true}, "right1": {"right": false}, ...}],
    items only in Input.item<i> (radio buttons carry no hidden inputs)."""
    text = mturk_csv(record, rows, assignments, shape="taskanswers")
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    by_assignment = {a: (h, fn) for h, _w, a, _s, fn in assignments}
    for r in table:
        h, fn = by_assignment[r["AssignmentId"]]
        obj = {}
        for i in range(1, trial_count(rows[h]) + 1):
            given = fn(rows[h][f"item{i}"], rows[h].get(f"p0side{i}", ""))
            for name in names:
                obj[f"{name}{i}"] = {name: given == name}
        r["Answer.taskAnswers"] = json.dumps([obj])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()


def test_crowd_radio_group_answers(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    assignments = []
    for h in range(len(rows)):
        assignments += [(h, "W1", f"A{h}1", "Approved", worker_fn(record, taste)),
                        (h, "W2", f"A{h}2", "Approved", worker_fn(record, taste))]
    path = tmp_path / "Batch_77_batch_results.csv"
    path.write_text(radio_download(record, rows, assignments, ("left", "right")), encoding="utf-8", newline="")
    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.output
    n_trials = trial_count(rows[0])
    assert f"read {len(assignments) * n_trials} judgments" in result.output
    assert counts_of(dataset) == {f"{k:06d}": (2 if taste(f"{k:06d}") == "p1" else 0, 2) for k in range(12)}


def test_answers_that_cannot_be_found_are_an_error_naming_the_columns(afc_batch, tmp_path):
    dataset, record, rows = afc_batch
    assignments = [(h, "W1", f"A{h}1", "Submitted", worker_fn(record, taste)) for h in range(len(rows))]
    text = radio_download(record, rows, assignments, ("left", "right"))
    # a page whose radio group sits in objects this reader cannot know: {"q1": {"answer": "left"}}
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    for r in table:
        obj = json.loads(r["Answer.taskAnswers"])[0]
        r["Answer.taskAnswers"] = json.dumps([{f"q{k[4:] if k.startswith('left') else k[5:]}": {"answer": "x"}
                                               for k in obj}])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writeheader()
    w.writerows(table)
    path = tmp_path / "odd.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    before = sorted(p.name for p in (dataset / AFC).iterdir())
    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset)])
    assert result.exit_code != 0
    assert "odd.csv" in result.output and "no answer found in 3 assignment(s)" in result.output
    assert "Answer.taskAnswers" in result.output and "q1" in result.output
    assert sorted(p.name for p in (dataset / AFC).iterdir()) == before


# ---------------------------------------------------------------- one person, one vote; the report


def test_one_vote_per_worker_and_example_unless_count_repeats(afc_batch, tmp_path):
    """A re-published batch: WREPEAT judges HIT 0's triplets in two assignments (p0 everywhere on the
    24th, p1 everywhere on the 25th); the latest counts, once."""
    dataset, record, rows = afc_batch
    assignments, statuses = [], {}
    for h in range(len(rows)):
        for w in ("W1", "W2"):
            assignments.append((h, w, f"A{h}{w}", worker_fn(record, taste)))
            statuses[f"A{h}{w}"] = {"AssignmentStatus": "Approved", "SubmitTime": mturk_time(24, 10),
                                    "ApprovalTime": mturk_time(26, 10)}
    # the later one first in the file: the order of rows must not matter, only SubmitTime
    assignments.append((0, "WREPEAT", "ZLATER", worker_fn(record, lambda s: "p1")))
    statuses["ZLATER"] = {"AssignmentStatus": "Submitted", "SubmitTime": mturk_time(25, 9)}
    assignments.append((0, "WREPEAT", "ZZEARLIER", worker_fn(record, lambda s: "p0")))
    statuses["ZZEARLIER"] = {"AssignmentStatus": "Approved", "SubmitTime": mturk_time(24, 11),
                             "ApprovalTime": mturk_time(26, 10)}
    path = tmp_path / "Batch_9_batch_results.csv"
    path.write_text(download(record, rows, assignments, statuses), encoding="utf-8", newline="")
    hit0 = [record["items"][rows[0][f"item{i}"]] for i in range(1, trial_count(rows[0]) + 1)]
    hit0_stems = [info["stem"] for info in hit0 if info["kind"] == "test"]
    base = {f"{k:06d}": (2 if taste(f"{k:06d}") == "p1" else 0, 2) for k in range(12)}
    pristine = tmp_path / "pristine"
    shutil.copytree(dataset, pristine)

    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.output
    want = dict(base, **{s: (base[s][0] + 1, 3) for s in hit0_stems})  # the later assignment: p1
    assert counts_of(dataset) == want
    assert f"{len(hit0_stems)} repeat judgments folded" in result.output
    report = json.loads((dataset / AFC / "judgments" / "report.json").read_text())
    assert report["rows"]["repeats_folded"] == len(hit0_stems) and report["one_vote_per_worker"] is True

    shutil.rmtree(dataset)
    shutil.copytree(pristine, dataset)
    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset), "--count-repeats"])
    assert result.exit_code == 0, result.output
    assert counts_of(dataset) == dict(base, **{s: (base[s][0] + 1, 4) for s in hit0_stems})
    assert "folded" not in result.output
    # the choice is kept for later ingests, like the sentinel threshold
    assert json.loads((dataset / AFC / "judgments" / "qc.json").read_text())["count_repeats"] is True


def test_a_worker_whose_assignments_were_all_rejected_is_listed_as_rejected(afc_batch, tmp_path):
    from judgments.report import format_report
    dataset, record, rows = afc_batch
    assignments, statuses = [], {}
    for h in range(len(rows)):
        for w in ("W1", "W2"):
            assignments.append((h, w, f"A{h}{w}", worker_fn(record, taste)))
            statuses[f"A{h}{w}"] = {"AssignmentStatus": "Approved", "SubmitTime": mturk_time(24, 10),
                                    "ApprovalTime": mturk_time(26, 10)}
    for h in (0, 1):
        assignments.append((h, "WBOT", f"R{h}", worker_fn(record, lambda s: "p1")))
        statuses[f"R{h}"] = {"AssignmentStatus": "Rejected", "SubmitTime": mturk_time(24, 10),
                             "RejectionTime": mturk_time(25, 10), "Reject": "bot"}
    path = tmp_path / "Batch_10_batch_results.csv"
    path.write_text(download(record, rows, assignments, statuses), encoding="utf-8", newline="")
    report = ingest_files([path], dataset)["subsets"][AFC]
    w = report["workers"]
    assert [r["worker"] for r in w["rejected"]] == ["WBOT"] and w["rejected"][0]["assignments"] == 2
    assert w["total"] == 3 and w["kept"] == 2 and w["unscored"] == 0 and w["dropped"] == []
    text = format_report(report)
    assert "rejected WBOT: all 2 assignment(s) rejected" in text and "0 unscored" in text


# ---------------------------------------------------------------- JND timing


@pytest.fixture
def jnd_batch(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, JND)
    record = build_task_set(subset, tmp_path / "jt", TaskSettings("mturk", 3, 4, 0.2, 0, "https://e.org/i", 0, "jnd1"))
    return tiny_dataset, record, read_input_rows(tmp_path / "jt")


def jnd_download(record, rows, assignments, timing_of):
    """JND batch: Answer.choice<i>, Answer.item<i>, Answer.rt<i> and the page's Answer.timing<i>
    ('first,blank,second' in ms). timing_of(assignment, i) -> the cell."""
    text = mturk_csv(record, rows, [(h, w, a, "Approved", fn) for h, w, a, fn in assignments])
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    n = trial_count(rows[0])
    header = list(table[0])
    for r in table:
        for i in range(1, n + 1):
            r[f"Answer.timing{i}"] = timing_of(r["AssignmentId"], i)
        r["SubmitTime"], r["ApprovalTime"] = mturk_time(24, 10), mturk_time(25, 10)
    cut = header.index("Approve")  # MTurk sorts Answer.* columns by name; the position is what matters
    header = header[:cut] + [f"Answer.timing{i}" for i in range(1, n + 1)] + header[cut:]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()


def jnd_says(record, taste_fn):
    def answer(item, side):
        info = record["items"][item]
        if info["kind"] == "test":
            return taste_fn(info["stem"])
        return info.get("expected") or "different"
    return answer


def test_jnd_trials_off_the_protocol_are_excluded_and_counted(jnd_batch, tmp_path):
    dataset, record, rows = jnd_batch
    same_if_even = lambda stem: "same" if int(stem) % 2 == 0 else "different"  # noqa: E731
    assignments = [(h, w, f"J{h}{w}", jnd_says(record, same_if_even)) for h in range(len(rows)) for w in "abc"]
    n = trial_count(rows[0])
    # worker c's trial 1 of every HIT: the second patch stayed 61 ms too long (a dropped frame or two);
    # worker b's trial 2: a 40 ms short blank, within the tolerance; everything else on time
    timing = {("c", 1): "1000,250,1061", ("b", 2): "1003,210,1016"}
    path = tmp_path / "jnd_results.csv"
    path.write_text(jnd_download(record, rows, assignments,
                                 lambda a, i: timing.get((a[-1], i), "1001,250,999")), encoding="utf-8", newline="")
    late = []  # what worker c's trial 1 was in each HIT
    for h, row in enumerate(rows):
        late.append(record["items"][row["item1"]])
    pristine = tmp_path / "pristine"
    shutil.copytree(dataset, pristine)
    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.output
    want = {f"{k:06d}": [3 if k % 2 == 0 else 0, 3] for k in range(8)}
    for info in late:
        if info["kind"] == "test":
            want[info["stem"]][1] -= 1
            want[info["stem"]][0] -= int(info["stem"]) % 2 == 0
    assert counts_of(dataset, JND) == {k: tuple(v) for k, v in want.items()}
    report = json.loads((dataset / JND / "judgments" / "report.json").read_text())
    assert report["timing"]["excluded"] == len(rows) and report["timing"]["tolerance_ms"] == 50
    assert report["timing"]["untimed_rows"] == 0
    assert report["sentinels"]["answers"] == sum(1 for a in assignments for i in range(1, n + 1)
                                                 if record["items"][rows[a[0]][f"item{i}"]]["kind"] == "sentinel"
                                                 and not (a[1] == "c" and i == 1))
    assert f"timing: {len(rows)} trial(s) excluded" in result.output
    # a looser tolerance counts them all
    shutil.rmtree(dataset)
    shutil.copytree(pristine, dataset)
    result = CliRunner().invoke(ingest, [str(path), "--dataset", str(dataset), "--timing-tolerance", "80"])
    assert result.exit_code == 0, result.output
    assert counts_of(dataset, JND) == {f"{k:06d}": (3 if k % 2 == 0 else 0, 3) for k in range(8)}


def test_jnd_timing_that_is_not_a_measurement_is_an_error(jnd_batch, tmp_path):
    dataset, record, rows = jnd_batch
    assignments = [(h, "a", f"J{h}a", jnd_says(record, lambda s: "same")) for h in range(len(rows))]
    path = tmp_path / "broken.csv"
    path.write_text(jnd_download(record, rows, assignments, lambda a, i: "1000;250" if i == 2 else "1000,250,1000"),
                    encoding="utf-8", newline="")
    with pytest.raises(IngestError, match=r"broken.csv, line 2: timing '1000;250' is not the page's measurement"):
        ingest_files([path], dataset)
    assert not (dataset / JND / "judgments" / "rows.tsv").exists()


# ---------------------------------------------------------------- sentinels that cannot be spotted


def png_chunks(data):
    """[(type, length)] of a PNG file's chunks."""
    import struct
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        out.append((data[at + 4:at + 8].decode("ascii"), length))
        at += 12 + length
    return out


def hit_urls(row):
    """Per trial of an input row: (item, [urls in page order])."""
    out = []
    for i in range(1, trial_count(row) + 1):
        urls = [row[c] for c in (f"ref{i}", f"left{i}", f"right{i}", f"first{i}", f"second{i}") if c in row]
        out.append((row[f"item{i}"], urls))
    return out


def test_jnd_sentinels_and_practice_cannot_be_spotted_by_names_bytes_ids_or_order(tiny_dataset, tmp_path):
    from bapps_build.files import read_png
    subset = resolve_subset(tiny_dataset, JND)
    tasks = tmp_path / "jt"
    record = build_task_set(subset, tasks, TaskSettings("mturk", 3, 2, 0.5, 4, "https://e.org/i", 0, "jnd-spot"))
    rows = read_input_rows(tasks)
    kind = {item: info["kind"] for item, info in record["items"].items()}
    images = tasks / "images"
    # names: opaque hashes; sizes and chunk layout: the same for every file served
    names = sorted(p.name for p in images.iterdir())
    assert all(len(n) == 20 and n.endswith(".png") and all(c in "0123456789abcdef" for c in n[:16]) for n in names)
    sizes = {(images / n).stat().st_size for n in names}
    assert len(sizes) == 1 and sizes == {record["derived"]["image_bytes"]}
    layouts = {tuple(t for t, _ in png_chunks((images / n).read_bytes())) for n in names}
    assert layouts == {("IHDR", "tEXt", "IDAT", "IEND")}

    seen_in_hits = {}
    for h, row in enumerate(rows):
        urls_of_hit = [u for _item, urls in hit_urls(row) for u in urls]
        assert len(urls_of_hit) == len(set(urls_of_hit))  # no URL twice on one page, whatever the trial
        for item, urls in hit_urls(row):
            for u in urls:
                seen_in_hits.setdefault(u, set()).add((h, item))
            first, second = (images / u.rsplit("/", 1)[1] for u in urls)
            a, b = first.read_bytes(), second.read_bytes()
            assert a != b and len(a) == len(b)
            same_pixels = np.array_equal(read_png(first), read_png(second))
            info = record["items"][item]
            assert same_pixels == (info.get("expected") == "same"), item  # no test pair is an identical pair
    # across HITs only practice trials come again (announced as practice, at the start of every HIT)
    for u, where in seen_in_hits.items():
        if len({h for h, _ in where}) > 1:
            assert {kind[i] for _, i in where} == {"practice"}
    sentinel_hits = {}
    for h, hit in enumerate(record["hits"]):
        for t in hit["trials"]:
            if kind[t["item"]] == "sentinel":
                sentinel_hits.setdefault(t["item"], set()).add(h)
    assert sentinel_hits and all(len(v) == 1 for v in sentinel_hits.values())  # like test ids: one HIT each

    # the bots: answer "same" when the two URLs, files or file sizes match; none does better on the
    # sentinels than a constant answer (it says "different" to every pair, sentinel or test)
    def bot(feature):
        def answer(item, side):
            row = next(r for r in rows if item in r.values())
            i = next(k for k, v in row.items() if v == item)[4:]
            a, b = (images / row[f"{c}{i}"].rsplit("/", 1)[1] for c in ("first", "second"))
            return "same" if feature(a, b) else "different"
        return answer
    features = {"url": lambda a, b: a.name == b.name, "bytes": lambda a, b: a.read_bytes() == b.read_bytes(),
                "size": lambda a, b: a.stat().st_size == b.stat().st_size}
    for name, feature in features.items():
        answers = {item: bot(feature)(item, "") for item, k in kind.items() if k != "practice"
                   and any(item in r.values() for r in rows)}
        said_same = {k: [answers[i] == "same" for i in answers if kind[i] == k] for k in ("sentinel", "test")}
        if name == "size":  # every file has one size: this bot says "same" to everything, tests too
            assert all(said_same["sentinel"]) and all(said_same["test"])
        else:
            assert not any(said_same["sentinel"]) and not any(said_same["test"]), name


def test_the_url_matching_bot_no_longer_passes_the_sentinels(tiny_dataset, tmp_path):
    """The bot of the issue ("different" unless the two URLs match) in a real batch: its sentinel
    score is the share of heavy-noise sentinels (what always saying "different" gets), and it is dropped."""
    subset = resolve_subset(tiny_dataset, JND)
    record = build_task_set(subset, tmp_path / "jt", TaskSettings("mturk", 3, 2, 0.5, 4, "https://e.org/i", 0, "jb"))
    rows = read_input_rows(tmp_path / "jt")
    kind = {item: info["kind"] for item, info in record["items"].items()}

    def url_bot(item, side):
        row = next(r for r in rows if item in r.values())
        i = next(k for k, v in row.items() if v == item)[4:]
        return "same" if row[f"first{i}"] == row[f"second{i}"] else "different"
    assignments = [(h, "WBOT", f"B{h}", "Approved", url_bot) for h in range(len(rows))]
    good = lambda item, side: record["items"][item].get("expected") or "different"  # noqa: E731
    assignments += [(h, w, f"G{h}{w}", "Approved", good) for h in range(len(rows)) for w in ("W1", "W2")]
    path = tmp_path / "Batch_5_batch_results.csv"
    path.write_text(mturk_csv(record, rows, assignments), encoding="utf-8", newline="")
    report = ingest_files([path], tiny_dataset)["subsets"][JND]
    dropped = {d["worker"]: d for d in report["workers"]["dropped"]}
    assert set(dropped) == {"WBOT"}
    sentinels = [record["items"][t["item"]] for hit in record["hits"] for t in hit["trials"]
                 if kind[t["item"]] == "sentinel"]
    heavy = sum(1 for s in sentinels if s["expected"] == "different")
    assert dropped["WBOT"]["sentinels_right"] == heavy < len(sentinels)


def test_page_markup_of_a_sentinel_equals_a_test_trials(tiny_dataset, tmp_path):
    """The generic pages (what a browser receives): every trial block has the same markup once its
    id and addresses are blanked out, and the page lists the trials in the HIT's shuffled order."""
    import re
    subset = resolve_subset(tiny_dataset, AFC)
    record = build_task_set(subset, tmp_path / "g", TaskSettings("generic", 2, 4, 0.3, 0, None, 0, "gen"))
    page = (tmp_path / "g" / "generic" / "hit-0001.html").read_text()
    blocks = re.findall(r'<div class="trial".*?</div>', page)
    shapes = {re.sub(r'q[0-9a-f]{12}|[0-9a-f]{16}\.png|data-i="\d+"|name="[a-z0-9]+"|value="(left|right)"', "X", b)
              for b in blocks}
    assert len(blocks) == record["derived"]["trials_per_hit"] and len(shapes) == 1


def test_toloka_sides_are_one_truth(tiny_dataset, tmp_path):
    """Every INPUT:p0side of the Toloka files equals tasks.json's, for every trial of every HIT."""
    subset = resolve_subset(tiny_dataset, AFC)
    out = tmp_path / "tol"
    record = build_task_set(subset, out, TaskSettings("toloka", 3, 3, 0.4, 2, "https://e.org/i", 0, "tol"))
    sides = {}
    for hit in record["hits"]:
        for t in hit["trials"]:
            sides.setdefault(t["item"], set()).add(t["p0side"])
    assert all(len(v) == 1 for v in sides.values())
    for name in ("tasks.tsv", "training.tsv"):
        table = list(csv.DictReader(open(out / "toloka" / name, newline=""), delimiter="\t"))
        assert table
        for r in table:
            item = r["INPUT:item"]
            assert sides[item] == {r["INPUT:p0side"]} == {record["items"][item]["p0side"]}
            if r["GOLDEN:choice"]:
                assert r["GOLDEN:choice"] == right_answer(record, item, r["INPUT:p0side"])
    # ingest holds files to that truth: a side the record does not say is an error naming the line;
    # a file without sides (the generic format, opaque ids) gets the record's
    item = next(i for i, v in record["items"].items() if v["kind"] == "test")
    side = record["items"][item]["p0side"]
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("\t".join(["INPUT:item", "INPUT:p0side", "OUTPUT:choice", "ASSIGNMENT:assignment_id",
                                "ASSIGNMENT:worker_id", "ASSIGNMENT:status"]) + "\n"
                     + "\t".join([item, flip(side), "left", "a1", "w1", "APPROVED"]) + "\n")
    with pytest.raises(IngestError, match=rf"wrong.tsv, line 2: item {item} was shown with p0 on the {side}"):
        ingest_files([wrong], tiny_dataset)
    generic = tmp_path / "lab.jsonl"
    generic.write_text(json.dumps({"worker": "L1", "item": item, "response": side}) + "\n")  # chose p0's side
    ingest_files([generic], tiny_dataset, partial_labels=True)
    assert counts_of(tiny_dataset)[record["items"][item]["stem"]] == (0, 1)


def test_a_judgments_table_of_the_earlier_version_still_reads(afc_batch, tmp_path):
    """rows.tsv without the status times (10 columns): its rejections stand against a plain
    Submitted download, and a later platform decision still wins."""
    from judgments.store import OLD_ROW_COLUMNS
    dataset, record, rows = afc_batch
    files = three_downloads(record, rows, tmp_path)
    ingest_files([files["reviewed"]], dataset)
    table = dataset / AFC / "judgments" / "rows.tsv"
    lines = table.read_text(encoding="utf-8").splitlines()
    table.write_text("\n".join("\t".join(line.split("\t")[:10]) for line in lines) + "\n", encoding="utf-8")
    assert table.read_text().split("\n", 1)[0].split("\t") == OLD_ROW_COLUMNS
    ingest_files([files["interim"]], dataset)
    assert state(dataset)[1] == sorted(f"3ASSIGN{h}WLAZY" for h in range(len(rows)))
    ingest_files([files["final"]], dataset)
    assert state(dataset) == (expected_after_review(record, rows),
                              sorted(f"3ASSIGN{h}WLAZY" for h in range(1, len(rows))))
    assert table.read_text().split("\n", 1)[0].count("\t") == 13  # rewritten in the new layout
