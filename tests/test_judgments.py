"""Judgments: task files out, results in, labels, report, metric scores.

The results files are written here the way the platforms write them (test_judgments_common.py);
the expected counts are worked out from the simulated workers' rules, not from the code.
"""
import csv
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bapps_build.files import read_png
from bapps_build.verify import verify_dataset
from judgments.catalog import resolve_subset
from judgments.cli import COMMANDS, evaluate, ingest, judgments, tasks
from judgments.evaluate import EvaluateError, evaluate_dataset, score_2afc, score_jnd, voc_ap
from judgments.ingest import IngestError, ingest_files, report_dataset
from judgments.layouts import template_variables
from judgments.metrics import MetricError, get_metric
from judgments.report import agreement
from judgments.tasks import TaskSettings, TasksError, build_task_set, sentinels_per_hit
from lpips_loader import JNDDataset, TwoAFCDataset
from test_judgments_common import (flip, mturk_csv, read_input_rows, right_answer, tiny_dataset,  # noqa: F401
                                   toloka_tsv)

AFC = "2afc/val/traditional"
JND = "jnd/val/traditional"


def snapshot(root):
    """Every file under root with its content hash: what 'nothing changed' means."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def counts_of(dataset, subset=AFC):
    with open(Path(dataset) / subset / "judgments" / "counts.csv", newline="") as f:
        return {r["stem"]: (int(r.get("n_p1") or r.get("n_same")), int(r["n_total"])) for r in csv.DictReader(f)}


def label(dataset, stem, subset=AFC, folder="judge"):
    value = np.load(Path(dataset) / subset / folder / f"{stem}.npy", allow_pickle=False)
    assert value.dtype == np.float32 and value.shape == (1,)
    return float(value[0])


# ---------------------------------------------------------------- a hand-checked case


def write(path, text):
    Path(path).write_text(text, encoding="utf-8")
    return path


def test_hand_checked_fractions_counts_and_report(tiny_dataset, tmp_path):
    """Direct ids, side swaps, a duplicate, a rejected row, worked out by hand."""
    rows = [
        "worker,assignment,item,response,side,time_ms,status",
        f"A,a1,{AFC}/000000,p1,,900,",
        f"A,a1,{AFC}/000001,left,right,800,",  # p0 on the right, left chosen: p1
        f"A,a1,{AFC}/000002,right,right,700,",  # p0 on the right, right chosen: p0
        f"B,b1,{AFC}/000000,p0,,1000,",
        f"B,b1,{AFC}/000000,p0,,1000,",  # the same judgment again: counts once
        f"B,b1,{AFC}/000001,1,,1000,",
        f"B,b1,{AFC}/000002,RIGHT,left,1000,",  # p0 on the left, right chosen: p1
        f"C,c1,{AFC}/000000,p1,,500,rejected",  # rejected: does not count
    ]
    results = write(tmp_path / "lab.csv", "\n".join(rows) + "\n")
    summary = ingest_files([results], tiny_dataset, partial_labels=True)
    counts = counts_of(tiny_dataset)
    assert counts["000000"] == (1, 2)
    assert counts["000001"] == (2, 2)
    assert counts["000002"] == (1, 2)
    assert all(counts[f"{k:06d}"] == (0, 0) for k in range(3, 12))
    assert label(tiny_dataset, "000000") == 0.5
    assert label(tiny_dataset, "000001") == 1.0
    assert label(tiny_dataset, "000002") == 0.5
    report = summary["subsets"][AFC]
    assert report["this_ingest"]["duplicates"] == 1
    assert report["rows"]["rejected"] == 1 and report["rows"]["counted"] == 6
    # agreement: 000000 split (0), 000001 unanimous (1), 000002 split (0)
    assert report["agreement"]["human_score"] == pytest.approx(1 / 3)
    assert report["labels"]["complete"] is False
    # partial labels: verify must flag the examples without a label
    problems = [p for r in verify_dataset(tiny_dataset, checksums=False) for p in r["problems"]]
    assert any("judge/ lacks 9 stem(s)" in p for p in problems)


def test_labels_wait_until_every_example_is_judged(tiny_dataset, tmp_path):
    one = write(tmp_path / "one.jsonl", json.dumps({"worker": "A", "item": f"{AFC}/000000", "response": "p1"}) + "\n")
    summary = ingest_files([one], tiny_dataset)
    assert not (tiny_dataset / AFC / "judge").exists()
    assert "11 of 12 examples have no judgment yet" in summary["subsets"][AFC]["labels"]["skipped_because"]
    assert counts_of(tiny_dataset)["000000"] == (1, 1)  # the counts are kept all the same
    rest = write(tmp_path / "rest.jsonl", "".join(
        json.dumps({"worker": "A", "item": f"{AFC}/{k:06d}", "response": "p0"}) + "\n" for k in range(1, 12)))
    ingest_files([rest], tiny_dataset)  # a later batch adds to the counts
    assert sorted(os.listdir(tiny_dataset / AFC / "judge")) == [f"{k:06d}.npy" for k in range(12)]
    assert label(tiny_dataset, "000000") == 1.0 and label(tiny_dataset, "000005") == 0.0
    assert all(not r["problems"] for r in verify_dataset(tiny_dataset))
    loaded = TwoAFCDataset(str(tiny_dataset / AFC))
    assert float(loaded[0]["judge"].reshape(-1)[0]) == 1.0 and float(loaded[5]["judge"].reshape(-1)[0]) == 0.0


# ---------------------------------------------------------------- the crowd workflow, every format


def preference(stem):
    """The simulated crowd's taste on test triplets: p1 for stems divisible by 3, else p0."""
    return "p1" if int(stem) % 3 == 0 else "p0"


def page_answer(record, taste):
    """answer_fn for a worker: sentinels right, test trials by taste(stem) -> p0/p1, on the page's sides."""
    def answer(item, side):
        info = record["items"][item]
        if info["kind"] == "test":
            want = taste(info["stem"])
            return side if want == "p0" else flip(side)
        return right_answer(record, item, side)
    return answer


def contrarian(record):
    """Fails every sentinel and answers p1 everywhere."""
    def answer(item, side):
        info = record["items"][item]
        if info["kind"] == "test":
            return flip(side)
        return flip(right_answer(record, item, side))
    return answer


@pytest.fixture
def afc_tasks(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, AFC)
    record = build_task_set(subset, tmp_path / "tasks",
                            TaskSettings("mturk", 3, 4, 0.2, 0, "https://example.org/img", 0, "val-batch"))
    return tiny_dataset, record, read_input_rows(tmp_path / "tasks")


def crowd_assignments(record, rows, rejected_hit=0):
    """Per HIT: two careful workers, one contrarian (dropped on sentinels), and in HIT `rejected_hit`
    a third careful worker whose assignment was rejected (answers p1 everywhere, must not count)."""
    out = []
    for h in range(len(rows)):
        out += [(h, "WCAREFUL1", f"3A{h}X1", "Approved", page_answer(record, preference)),
                (h, "WCAREFUL2", f"3A{h}X2", "Submitted", page_answer(record, preference)),
                (h, "WCONTRA", f"3A{h}X3", "Submitted", contrarian(record))]
    out.append((rejected_hit, "WREJ", "3AREJ", "Rejected", page_answer(record, lambda s: "p1")))
    return out


def expected_counts(n=12):
    return {f"{k:06d}": (2 if preference(f"{k:06d}") == "p1" else 0, 2) for k in range(n)}


@pytest.mark.parametrize("shape,turkle", [("plain", False), ("flatten", False), ("taskanswers", False),
                                          ("plain", True)])
def test_mturk_every_answer_shape(afc_tasks, tmp_path, shape, turkle):
    dataset, record, rows = afc_tasks
    assignments = crowd_assignments(record, rows)
    if turkle:  # Turkle has no status column: nothing is rejected there
        assignments = assignments[:-1]
    results = write(tmp_path / "Batch_1_batch_results.csv",
                    mturk_csv(record, rows, assignments, shape=shape, turkle=turkle, bom=True))
    summary = ingest_files([results], dataset)
    assert counts_of(dataset) == expected_counts()
    report = summary["subsets"][AFC]
    assert [d["worker"] for d in report["workers"]["dropped"]] == ["WCONTRA"]
    assert report["workers"]["dropped"][0]["sentinels_right"] == 0
    assert report["rows"]["rejected"] == (0 if turkle else len(rows[0]) // 5)
    assert all(not r["problems"] for r in verify_dataset(dataset))
    assert label(dataset, "000003") == 1.0 and label(dataset, "000004") == 0.0


def test_toloka_tsv(afc_tasks, tmp_path):
    dataset, record, rows = afc_tasks
    judgments_rows = []
    for h, row in enumerate(rows):
        for worker, fn in (("tw1", page_answer(record, preference)), ("tw2", page_answer(record, preference)),
                           ("tw3", contrarian(record))):
            for i in range(1, len(row) // 5 + 1):
                item, side = row[f"item{i}"], row[f"p0side{i}"]
                judgments_rows.append((worker, f"{worker}-{h}", "APPROVED", item, side, fn(item, side)))
    # INPUT:p0side is the task's own input: the side tasks.json records (a different one is an error)
    judgments_rows.append(("tw9", "tw9-0", "REJECTED", rows[0]["item1"], rows[0]["p0side1"], "left"))
    judgments_rows.append(("tw9", "tw9-1", "SKIPPED", rows[0]["item2"], rows[0]["p0side2"], ""))
    results = write(tmp_path / "assignments.tsv", toloka_tsv(record, judgments_rows))
    summary = ingest_files([results], dataset)
    assert counts_of(dataset) == expected_counts()
    assert summary["files"][0]["unanswered"] == 1
    assert [d["worker"] for d in summary["subsets"][AFC]["workers"]["dropped"]] == ["tw3"]


def test_generic_csv_and_jsonl_give_the_same_counts(afc_tasks, tmp_path):
    dataset, record, rows = afc_tasks
    lines = []
    for h, row in enumerate(rows):
        for worker in ("g1", "g2"):
            for i in range(1, len(row) // 5 + 1):
                item, side = row[f"item{i}"], row[f"p0side{i}"]
                lines.append({"worker": worker, "item": item, "response": page_answer(record, preference)(item, side),
                              "side": side, "time_ms": 1234, "assignment": f"s{h}"})
    half = len(lines) // 2
    as_csv = "worker,item,response,side,time_ms,assignment\n" + "".join(
        f"{x['worker']},{x['item']},{x['response']},{x['side']},{x['time_ms']},{x['assignment']}\n" for x in lines[:half])
    as_jsonl = "".join(json.dumps(x) + "\n" for x in lines[half:])
    ingest_files([write(tmp_path / "a.csv", "\ufeff" + as_csv), write(tmp_path / "b.jsonl", as_jsonl)], dataset)
    assert counts_of(dataset) == expected_counts()


def test_reingest_changes_nothing_and_a_rejection_later_is_applied(afc_tasks, tmp_path):
    dataset, record, rows = afc_tasks
    assignments = crowd_assignments(record, rows)[:-1]
    first = write(tmp_path / "batch.csv", mturk_csv(record, rows, assignments))
    ingest_files([first], dataset)
    before = snapshot(dataset)
    summary = ingest_files([first], dataset)
    assert snapshot(dataset) == before
    assert summary["subsets"][AFC]["changed"] is False
    # the same batch downloaded again after rejecting WCAREFUL2's first assignment
    later = [(h, w, a, "Rejected" if a == "3A0X2" else s, fn) for h, w, a, s, fn in assignments]
    second = write(tmp_path / "batch-again.csv", mturk_csv(record, rows, later, shape="taskanswers"))
    summary = ingest_files([second], dataset)
    assert summary["subsets"][AFC]["this_ingest"]["status_updates"] == len(rows[0]) // 5
    first_hit = {record["items"][rows[0][f"item{i}"]].get("stem") for i in range(1, len(rows[0]) // 5 + 1)} - {None}
    counts = counts_of(dataset)
    assert len(first_hit) == 4
    for stem, (n_p1, n_total) in expected_counts().items():
        assert counts[stem] == ((n_p1 // 2, 1) if stem in first_hit else (n_p1, n_total))


def test_quoted_newlines_and_bom_keep_line_numbers(afc_tasks, tmp_path):
    dataset, record, rows = afc_tasks
    text = mturk_csv(record, rows, crowd_assignments(record, rows)[:3], bom=True, feedback="thanks,\nsee you")
    # each record spans 3 lines (newlines quoted in Description and RequesterFeedback): the third
    # assignment starts on line 2 + 2 * 3 = 8; give it an unknown item
    head, third = text.split("3A0X3", 1)
    broken = head + "3A0X3" + third.replace(rows[0]["item1"], "qdeadbeef0000")
    results = write(tmp_path / "broken.csv", broken)
    before = snapshot(dataset)
    with pytest.raises(IngestError) as err:
        ingest_files([results], dataset)
    message = str(err.value)
    assert "broken.csv, line 8: item 'qdeadbeef0000'" in message
    assert "nothing was written" in message
    assert snapshot(dataset) == before
    # the first two assignments, newlines and all, ingest cleanly
    fine = write(tmp_path / "fine.csv", head.rsplit("\r\n", 1)[0] + "\r\n")
    summary = ingest_files([fine], dataset)
    assert summary["files"][0]["records"] == 2


# ---------------------------------------------------------------- errors: all or nothing


@pytest.mark.parametrize("name,text,expect", [
    ("unknown.csv", "worker,item,response\nA,2afc/val/traditional/999999,p0\n", "line 2: item '2afc/val/traditional/999999'"),
    ("badvalue.csv", "worker,item,response\nA,2afc/val/traditional/000001,maybe\n", "line 2: response 'maybe'"),
    ("noside.csv", "worker,item,response\nA,2afc/val/traditional/000001,left\n", "needs the side p0 was shown on"),
    ("short.csv", "worker,item,response\nA,2afc/val/traditional/000001\n", "line 2: 2 fields where the header has 3"),
    ("nocol.csv", "worker,item,answer\nA,2afc/val/traditional/000001,p0\n", "not a results file"),
    ("nocol.jsonl", '{"worker": "A", "item": "2afc/val/traditional/000001"}\n', "line 1: no response"),
    ("badjson.jsonl", '{"worker": "A",\n', "line 1: not valid JSON"),
    ("results.xlsx", "PK\x03\x04", "unknown file type '.xlsx'"),
    ("toloka.tsv", "INPUT:item\tOUTPUT:choice\tASSIGNMENT:worker_id\nx\tleft\tw\n", "no column 'ASSIGNMENT:assignment_id'"),
    ("mturk.csv", "HITId,WorkerId,Answer.choice1\nH,W,left\n", "no column 'AssignmentId'"),
])
def test_bad_input_names_file_and_row_and_writes_nothing(tiny_dataset, tmp_path, name, text, expect):
    good = write(tmp_path / "good.csv", f"worker,item,response\nA,{AFC}/000000,p1\n")
    ingest_files([good], tiny_dataset)
    before = snapshot(tiny_dataset)
    more = write(tmp_path / "more.csv", f"worker,item,response\nB,{AFC}/000000,p1\n")
    bad = write(tmp_path / name, text)
    with pytest.raises(IngestError) as err:
        ingest_files([more, bad], tiny_dataset)  # the good file in the same call is not written either
    assert name in str(err.value) and expect in str(err.value)
    assert snapshot(tiny_dataset) == before


def test_cli_errors_are_messages(tiny_dataset, tmp_path):
    bad = write(tmp_path / "x.csv", "worker,item,response\nA,nowhere/000001,p0\n")
    result = CliRunner().invoke(ingest, [str(bad), "--dataset", str(tiny_dataset)])
    assert result.exit_code == 1 and "Error:" in result.output and "x.csv, line 2" in result.output
    result = CliRunner().invoke(tasks, [str(tiny_dataset), "--subset", AFC, "--platform", "mturk", "--judgments", "3",
                                        "--per-hit", "4", "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "--base-url" in result.output
    result = CliRunner().invoke(evaluate, [str(tiny_dataset), "--metric", "l2"])
    assert result.exit_code == 1 and "ingest" in result.output


def test_every_command_has_help_with_an_example():
    for command in COMMANDS:
        sub = [command.commands["report"]] if hasattr(command, "commands") else [command]
        for c in sub:
            text = c.get_help(c.make_context(c.name, ["--help"], resilient_parsing=True))
            assert "Example" in text, c.name


# ---------------------------------------------------------------- tasks


def test_task_set_contents(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, AFC)
    settings = TaskSettings("mturk", 5, 5, 0.2, 0, "https://example.org/img", 7, "t1")
    record = build_task_set(subset, tmp_path / "a", settings)
    again = build_task_set(subset, tmp_path / "b", settings)
    assert (tmp_path / "a" / "tasks.json").read_text() == (tmp_path / "b" / "tasks.json").read_text()
    assert sorted(os.listdir(tmp_path / "a" / "images")) == sorted(os.listdir(tmp_path / "b" / "images"))
    assert record == again
    d = record["derived"]
    assert d["hits"] == 3 and d["sentinels_per_hit"] == 1 == sentinels_per_hit(5, 0.2)
    assert sentinels_per_hit(160, 0.2) == 40  # the paper's JND mix
    kinds = [record["items"][t["item"]]["kind"] for h in record["hits"] for t in h["trials"]]
    assert kinds.count("test") == 12 and len(kinds) == 3 * 6  # the short last HIT is filled with sentinels
    tests_seen = [record["items"][t["item"]]["stem"] for h in record["hits"] for t in h["trials"]
                  if record["items"][t["item"]]["kind"] == "test"]
    assert sorted(tests_seen) == subset.stems
    sides = [t["p0side"] for h in record["hits"] for t in h["trials"]]
    assert 0 < sides.count("left") < len(sides)
    # the page's variables are exactly the input CSV's columns; ids reveal nothing
    layout = (tmp_path / "a" / "mturk" / "layout.html").read_text()
    header = (tmp_path / "a" / "mturk" / "input.csv").read_text().split("\n", 1)[0].split(",")
    assert set(template_variables(layout)) == set(header) - {"hit"}
    csv_text = (tmp_path / "a" / "mturk" / "input.csv").read_text()
    assert "sentinel" not in csv_text and "000001" not in csv_text
    assert all(re.fullmatch(r"q[0-9a-f]{12}", i) for i in record["items"])
    # the record is in the dataset, where ingest finds it
    assert json.loads((subset.store / "tasks" / "t1.json").read_text())["items"] == record["items"]
    with pytest.raises(TasksError, match="different task set named 't1'"):
        build_task_set(subset, tmp_path / "c", TaskSettings("mturk", 5, 5, 0.2, 0, "https://e.org/i", 8, "t1"))


def test_sentinel_images_have_the_answer_they_claim(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, AFC)
    record = build_task_set(subset, tmp_path / "a", TaskSettings("generic", 2, 4, 0.5, 2, None, 0, "s"))
    images = tmp_path / "a" / "images"
    checked = 0
    for item, info in record["items"].items():
        if info["kind"] == "test":
            continue
        f = {k: read_png(images / v).astype(np.float32) for k, v in record["files"][item].items()}
        d0, d1 = np.mean((f["ref"] - f["p0"]) ** 2), np.mean((f["ref"] - f["p1"]) ** 2)
        assert (d0 < d1) == (info["expected"] == "p0")
        assert 10 * min(d0, d1) < max(d0, d1)  # heavy against light: no contest
        checked += 1
    assert checked == record["derived"]["sentinel_pool"] + 2
    page = (tmp_path / "a" / "generic" / "hit-0001.html").read_text()
    assert "${" not in page and "../images/" in page


def test_jnd_tasks_ingest_and_same_rates(tiny_dataset, tmp_path):
    subset = resolve_subset(tiny_dataset, JND)
    record = build_task_set(subset, tmp_path / "jt", TaskSettings("mturk", 3, 4, 0.2, 10, "https://e.org/i", 0, "jnd1"))
    kinds = [record["items"][t["item"]]["kind"] for t in record["hits"][0]["trials"]]
    assert kinds[:10] == ["practice"] * 10 and kinds.count("practice") == 10
    practice = [record["items"][t["item"]] for t in record["hits"][0]["trials"][:10]]
    assert sum(p.get("expected") == "same" for p in practice) == 4
    assert sum(p.get("expected") == "different" for p in practice) == 1
    for item, info in record["items"].items():
        if info.get("expected") == "same":
            files = record["files"][item]
            # the same pixels in two files that share no name and no bytes (test_judgments_trust.py)
            assert files["p0"] != files["p1"]
            assert np.array_equal(read_png(tmp_path / "jt" / "images" / files["p0"]),
                                  read_png(tmp_path / "jt" / "images" / files["p1"]))
    rows = read_input_rows(tmp_path / "jt")

    def says(taste):
        def answer(item, side):
            info = record["items"][item]
            if info["kind"] == "test":
                return taste(info["stem"])
            return info.get("expected") or "different"
        return answer

    same_if_even = lambda stem: "same" if int(stem) % 2 == 0 else "different"  # noqa: E731
    assignments = [(h, w, f"J{h}{w}", "Approved", says(same_if_even)) for h in range(len(rows)) for w in ("a", "b", "c")]
    results = write(tmp_path / "jnd.csv", mturk_csv(record, rows, assignments, shape="flatten"))
    summary = ingest_files([results], tiny_dataset)
    counts = counts_of(tiny_dataset, JND)
    assert counts == {f"{k:06d}": (3 if k % 2 == 0 else 0, 3) for k in range(8)}
    assert label(tiny_dataset, "000000", JND, "same") == 1.0
    report = summary["subsets"][JND]
    assert report["rows"]["practice"] == 10 * 3 * len(rows)
    assert report["same_rate"]["test_pairs"] == 0.5
    assert report["same_rate"]["identical_sentinels"] == 1.0
    assert report["same_rate"]["heavy_noise_sentinels"] == 0.0
    assert report["agreement"]["pairwise_agreement"] == 1.0
    loaded = JNDDataset(str(tiny_dataset / JND))
    assert [float(loaded[k]["same"].reshape(-1)[0]) for k in range(8)] == [1.0, 0.0] * 4
    # the report command recomputes the same numbers from what is stored
    stored = report_dataset(tiny_dataset, JND)[0]
    assert stored["same_rate"] == report["same_rate"] and stored["workers"] == report["workers"]
    out = CliRunner().invoke(judgments, ["report", str(tiny_dataset)])
    assert out.exit_code == 0 and "'same' rate: test pairs 50.0%" in out.output


def test_tasks_cli_then_ingest_with_tasks_folder(tiny_dataset, tmp_path):
    """The dataset copy of the record lost: --tasks TASKS brings it back."""
    out = tmp_path / "toloka-run"
    result = CliRunner().invoke(tasks, [str(tiny_dataset), "--subset", AFC, "--platform", "toloka", "--judgments", "3",
                                        "--per-hit", "6", "--base-url", "https://e.org/i", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "tasks.json").read_text())
    tsv = (out / "toloka" / "tasks.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["INPUT:item", "INPUT:p0side", "INPUT:ref", "INPUT:left", "INPUT:right",
                                  "GOLDEN:choice"]
    golden = [line.split("\t") for line in tsv[1:] if line.split("\t")[-1]]
    assert golden and all(record["items"][g[0]]["kind"] == "sentinel" for g in golden)
    (tiny_dataset / AFC / "judgments" / "tasks" / "toloka-run.json").unlink()
    item = next(i for i, v in record["items"].items() if v["kind"] == "test")
    side = record["items"][item]["p0side"]  # as the TSV uploaded to Toloka gave it (INPUT:p0side)
    res = write(tmp_path / "r.tsv", toloka_tsv(record, [("w", "a1", "APPROVED", item, side, "right")]))
    with pytest.raises(IngestError, match="not in this dataset"):
        ingest_files([res], tiny_dataset)
    summary = ingest_files([res], tiny_dataset, tasks=[out])
    assert summary["subsets"][AFC]["rows"]["counted"] == 1
    assert (tiny_dataset / AFC / "judgments" / "tasks" / "toloka-run.json").exists()


def test_aggregate_with_crowd_kit(afc_tasks, tmp_path):
    pytest.importorskip("crowdkit", reason="pip install crowd-kit")
    dataset, record, rows = afc_tasks
    results = write(tmp_path / "b.csv", mturk_csv(record, rows, crowd_assignments(record, rows)))
    ingest_files([results], dataset, aggregate=["dawid-skene"])
    with open(dataset / AFC / "judgments" / "aggregate-dawid-skene.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 12
    for r in table:  # unanimous kept judges: the model agrees with them
        assert int(r["dawid-skene_label"]) == (1 if preference(r["stem"]) == "p1" else 0)


# ---------------------------------------------------------------- scorers and metrics


def test_score_2afc_by_hand():
    d0 = np.array([1.0, 2.0, 3.0, 3.0])
    d1 = np.array([2.0, 1.0, 3.0, 4.0])
    h = np.array([0.2, 0.6, 0.5, 1.0])
    # 0.8 (p0 closer, 1-h) + 0.6 (p1 closer, h) + 0.5 (tie) + 0.0 = 1.9 / 4
    assert score_2afc(d0, d1, h) == pytest.approx(0.475)


def test_jnd_map_by_hand():
    d = np.array([0.1, 0.4, 0.2, 0.3]).reshape(4, 1, 1, 1)  # the shape the upstream scorer chokes on
    same = np.array([1.0, 0.0, 0.5, 0.0])
    # sorted: same = 1, .5, 0, 0 -> precision 1, .75, .5, .375; recall 2/3, 1, 1, 1
    # AP = 2/3 * 1 + 1/3 * .75 = 11/12
    assert score_jnd(d, same) == pytest.approx(11 / 12)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert score_jnd(np.arange(4.0), np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    # worst order: precision 0, 0, 1/3, 1/2 at recall 0, 0, .5, 1; the envelope lifts it to 1/2 throughout
    assert score_jnd(np.arange(4.0), np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5)
    with pytest.raises(EvaluateError):
        score_jnd(np.arange(3.0), np.zeros(3))


def test_agreement_by_hand():
    a = agreement(np.array([1, 2, 0, 3]), np.array([2, 2, 1, 5]))
    # n=2,k=1: 0; n=2,k=2: 1; n=1: unused; n=5,k=3: (6 + 2) / 20 = 0.4
    assert a["examples_with_2_or_more"] == 3
    assert a["human_score"] == pytest.approx((0 + 1 + 0.4) / 3)
    assert a["pairwise_agreement"] == pytest.approx((0 + 2 + 8) / (2 + 2 + 20))


def test_metrics_conventions():
    rng = np.random.default_rng(0)
    a = rng.random((3, 64, 64, 3), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape).astype(np.float32), 0, 1)
    l2, psnr, ssim = (get_metric(m).distances for m in ("l2", "psnr", "ssim"))
    assert np.allclose(l2(a, a), 0) and np.all(l2(a, b) > 0)
    assert np.allclose(psnr(a, a), -100) and np.allclose(psnr(a, b), 10 * np.log10(l2(a, b)))
    assert np.allclose(ssim(a, a), 0) and np.all(ssim(a, b) > 0.05)
    with pytest.raises(MetricError, match="module:function"):
        get_metric("nonsense")


def test_lpips_missing_is_a_clear_error():
    try:
        import lpips  # noqa: F401
    except ImportError:
        with pytest.raises(MetricError, match="pip install lpips"):
            get_metric("lpips")
    else:
        pytest.skip("lpips is installed; the message for a missing package cannot be seen")


def write_labels_by(dataset, subset, distance, agree=True):
    """Labels that a metric agrees with entirely (or not at all): h = 1 when p1 is closer."""
    sub = resolve_subset(dataset, subset)
    rows = []
    for stem in sub.stems:
        ref, p0, p1 = (read_png(sub.path / f / f"{stem}.png").astype(np.float32)[None] / 255 for f in ("ref", "p0", "p1"))
        p1_closer = distance(ref, p1)[0] < distance(ref, p0)[0]
        rows.append(json.dumps({"worker": "oracle", "item": f"{subset}/{stem}",
                                "response": "p1" if p1_closer == agree else "p0"}))
    results = dataset.parent / f"oracle-{agree}.jsonl"
    results.write_text("\n".join(rows) + "\n")
    ingest_files([results], dataset)


def test_evaluate_builtins_and_a_callable(tiny_dataset, tmp_path):
    write_labels_by(tiny_dataset, AFC, get_metric("l2").distances)
    plugin = tmp_path / "my_metric.py"
    plugin.write_text("import numpy as np\n"
                      "def negated(a, b):\n    return -float(np.mean((a - b) ** 2))\n"
                      "def batched_l2(a, b):\n    return ((a - b) ** 2).mean(axis=(1, 2, 3))\n"
                      "batched_l2.batched = True\n")
    results = evaluate_dataset(tiny_dataset, ["l2", "psnr", "ssim", f"{plugin}:negated", f"{plugin}:batched_l2"])
    score = {r["metric"]: r["score"] for r in results}
    assert score["l2"] == 1.0 and score["psnr"] == 1.0  # PSNR is a monotone function of the MSE
    assert score[f"{plugin}:negated"] == 0.0 and score[f"{plugin}:batched_l2"] == 1.0
    assert 0.0 <= score["ssim"] <= 1.0
    assert results[0]["human"] is None  # one judgment each: no ceiling to compute
    out = CliRunner().invoke(evaluate, [str(tiny_dataset), "--metric", "l2", "--metric", "psnr"])
    assert out.exit_code == 0 and re.search(r"l2\s+100\.00", out.output), out.output


def test_a_failure_while_writing_leaves_the_old_files_and_no_temporaries(tiny_dataset, tmp_path, monkeypatch):
    everything = write(tmp_path / "all.csv", "worker,item,response\n" + "".join(
        f"A,{AFC}/{k:06d},p0\n" for k in range(12)))
    ingest_files([everything], tiny_dataset)
    before = snapshot(tiny_dataset)
    import judgments.ingest as ingest_module

    calls = {"n": 0}
    real = ingest_module.label_bytes

    def disk_full_after_five(value):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        return real(value)

    monkeypatch.setattr(ingest_module, "label_bytes", disk_full_after_five)
    more = write(tmp_path / "more.csv", "worker,item,response\n" + "".join(f"B,{AFC}/{k:06d},p1\n" for k in range(12)))
    with pytest.raises(OSError):
        ingest_files([more], tiny_dataset)
    assert snapshot(tiny_dataset) == before  # rows.tsv, counts, labels, raw copies: all as they were
    assert not [p for p in (tiny_dataset / AFC).rglob("*") if p.name.endswith(".partial")]
