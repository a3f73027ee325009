"""`bapps-build simulate`: files in each platform's export shape that `ingest` reads, giving labels
that match the simulated observers' truth; QC drops the spammers and the rejected assignments."""
import csv

import numpy as np
import pytest

from judgments.catalog import resolve_subset
from judgments.ingest import ingest_files
from judgments.simulate import simulate_files
from judgments.store import COUNTS, read_counts
from serve_helpers import make_tasks
from test_judgments_common import tiny_dataset  # noqa: F401  (a fixture)


def labels_of(dataset, rel):
    subset = resolve_subset(dataset, rel)
    counts = read_counts(subset.store / COUNTS)
    return subset, counts


@pytest.mark.parametrize("platform,out", [("mturk", "batch_results.csv"), ("toloka", "assignments.tsv"),
                                          ("generic", "results.jsonl")])
def test_simulated_crowd_ingests_to_the_truth(tiny_dataset, tmp_path, platform, out):
    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=30, per_hit=4, sentinel_rate=0.5,
                        name=f"sim-{platform}")
    summary = simulate_files(record, tmp_path / "t", tmp_path / out, observer="l2", noise=0.4, workers=45,
                             spammers=0.2, rejects=0.1, platform=platform, seed=5)
    if platform == "mturk":  # the real export's shape: every field quoted, Answer.* sorted by name
        text = (tmp_path / out).read_bytes().decode()
        header = next(csv.reader([text.split("\r\n", 1)[0]]))
        answers = [h for h in header if h.startswith("Answer.")]
        assert answers == sorted(answers) and text.startswith('"HITId","HITTypeId"')
        assert header[-2:] == ["Approve", "Reject"]
    result = ingest_files([tmp_path / out], tiny_dataset, write_labels=True)
    report = result["subsets"]["2afc/val/traditional"]
    dropped = {d["worker"] for d in report["workers"]["dropped"]}
    spammers = set(summary["spammers"])
    assert len(spammers) == 9
    assert dropped <= spammers and len(dropped) >= len(spammers) - 1  # 8 sentinels each: luck is rare
    # exact counts: every non-rejected assignment of a kept worker, once per example of its HIT
    subset, counts = labels_of(tiny_dataset, "2afc/val/traditional")
    expected = {stem: 0 for stem in subset.stems}
    for a in summary["plan"]:
        if a["rejected"] or a["worker"] in dropped:
            continue
        for t in record["hits"][a["hit"] - 1]["trials"]:
            info = record["items"][t["item"]]
            if info["kind"] == "test":
                expected[info["stem"]] += 1
    assert {s: n for s, (_, n) in counts.items()} == expected
    # the fractions are binomial draws around the truth
    truth = summary["truth"]
    errors = []
    for stem, (n_pos, n) in counts.items():
        p = truth[stem]
        assert abs(n_pos / n - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1.0 / n, (stem, n_pos, n, p)
        errors.append(abs(n_pos / n - p))
    assert np.mean(errors) < 0.12
    label = np.load(subset.path / "judge" / f"{subset.stems[0]}.npy").reshape(-1)[0]
    assert label == pytest.approx(counts[subset.stems[0]][0] / counts[subset.stems[0]][1], abs=1e-6)


def test_noise_free_observer_gives_the_truth_exactly(tiny_dataset, tmp_path):
    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=3, per_hit=6, name="sim-exact")
    summary = simulate_files(record, tmp_path / "t", tmp_path / "r.csv", observer="ssim", noise=0.0, workers=3,
                             platform="generic", seed=1)
    ingest_files([tmp_path / "r.csv"], tiny_dataset)
    subset, counts = labels_of(tiny_dataset, "2afc/val/traditional")
    from judgments.evaluate import subset_distances
    from judgments.metrics import get_metric

    d = subset_distances(subset, get_metric("ssim"))
    for k, stem in enumerate(subset.stems):
        n_pos, n = counts[stem]
        assert n == 3
        assert n_pos / n == summary["truth"][stem] == (1.0 if d["d1"][k] < d["d0"][k] else 0.0)


def test_jnd_simulation_says_same_below_the_threshold(tiny_dataset, tmp_path):
    record = make_tasks(tiny_dataset, tmp_path / "t", task="jnd", judgments=20, per_hit=4, sentinel_rate=0.25,
                        practice=2, name="sim-jnd")
    summary = simulate_files(record, tmp_path / "t", tmp_path / "b.csv", observer="l2", noise=0.0, workers=20,
                             platform="mturk", seed=2)
    result = ingest_files([tmp_path / "b.csv"], tiny_dataset)
    report = result["subsets"]["jnd/val/traditional"]
    assert report["same_rate"]["identical_sentinels"] == 1.0
    assert report["same_rate"]["heavy_noise_sentinels"] == 0.0
    subset, counts = labels_of(tiny_dataset, "jnd/val/traditional")
    truth = summary["truth"]
    assert {s: n_pos / n for s, (n_pos, n) in counts.items()} == truth
    assert 0 < sum(truth.values()) < len(truth)  # some pairs below the threshold, some above


def test_simulate_drives_a_running_server(tiny_dataset, tmp_path):
    pytest.importorskip("uvicorn")
    from serve_helpers import Server
    from judgments.simulate import simulate_serve
    import sqlite3

    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=10, per_hit=4, sentinel_rate=0.5, name="sim-serve")
    db = tmp_path / "study.sqlite"
    server = Server(tmp_path / "t", tiny_dataset, db)
    try:
        summary = simulate_serve(record, tmp_path / "t", server.url, observer="l2", noise=0.0, workers=40,
                                 spammers=0.0, seed=3)
    finally:
        server.stop()
    assert summary["failures"] == []
    n_trials = record["derived"]["trials_per_hit"]
    assert summary["answers"] == 3 * 10 * n_trials  # 30 slots for 40 participants: 10 get nothing
    with sqlite3.connect(db) as c:
        stored = set(c.execute("SELECT assignment, position FROM answers"))
    assert stored == set(summary["acked"])
    result = ingest_files([db], tiny_dataset)
    report = result["subsets"]["2afc/val/traditional"]
    assert report["workers"]["dropped"] == []
    subset, counts = labels_of(tiny_dataset, "2afc/val/traditional")
    # noise-free observers: every judgment of an example agrees with the truth (0 or 1)
    assert {s: (n_pos / n, n) for s, (n_pos, n) in counts.items()} == {s: (summary["truth"][s], 10)
                                                                       for s in subset.stems}


def test_plan_intervals_shrink_with_judgments_and_keep_the_human_score(tiny_dataset, tmp_path):
    from judgments.plan import plan_subset

    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=30, per_hit=4, name="sim-plan")
    simulate_files(record, tmp_path / "t", tmp_path / "pilot.csv", observer="l2", noise=0.8, workers=40, seed=9)
    ingest_files([tmp_path / "pilot.csv"], tiny_dataset)
    result = plan_subset(tiny_dataset, "2afc/val/traditional", ["ssim"], [1, 2, 5, 20, 80], examples=400,
                         bootstrap=300, target=0.04)  # 400 examples: the metric alone is near +-0.034
    rows = {r["judgments"]: r for r in result["rows"]}
    widths = [rows[n]["ssim"]["half_width"] for n in (1, 5, 80)]
    assert widths[0] > widths[1] > widths[2]
    # the agreement estimator is unbiased for any n >= 2: its mean does not move with n
    subset, counts = labels_of(tiny_dataset, "2afc/val/traditional")
    p = np.array([a / b for a, b in counts.values()])
    expected = float(np.mean(p ** 2 + (1 - p) ** 2))
    for n in (2, 5, 20, 80):
        assert abs(rows[n]["human"]["mean"] - expected) < 0.02
    assert "human" not in rows[1]
    # many judgments: the metric's score is the pilot's own score
    from judgments.evaluate import score_2afc, subset_distances
    from judgments.metrics import get_metric

    d = subset_distances(subset, get_metric("ssim"))
    pilot = score_2afc(d["d0"], d["d1"], p)
    assert abs(rows[80]["ssim"]["mean"] - pilot) < 0.02
    n = result["enough"]
    assert n is not None and all(v["half_width"] <= 0.04 for v in rows[n].values() if isinstance(v, dict))
    smaller = [m for m in rows if m < n]
    assert all(max(v["half_width"] for v in rows[m].values() if isinstance(v, dict)) > 0.04 for m in smaller)
