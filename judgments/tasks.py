"""`bapps-build tasks`: the files a crowd platform needs to collect judgments for one subset.

    TASKS/images/<sha256[:16]>.png    every patch shown, flat (host this folder): one file per trial
                                      and image slot, all of one size (see ServedImages)
    TASKS/tasks.json                  what every trial id means; also copied into the dataset as
                                      <subset>/judgments/tasks/<name>.json, where `ingest` finds it
    TASKS/mturk/{input.csv,layout.html}     one input row per HIT (MaxAssignments = --judgments)
    TASKS/toloka/{tasks.tsv,training.tsv,layout.html}
    TASKS/generic/{trials.csv,layout.html,hit-NNNN.html}   ready pages for a lab or own server
    TASKS/README.txt                  what to do next

A HIT holds the practice trials first, then its share of the examples with sentinels mixed in
at random positions. Every sentinel trial is made for its HIT (its own id, its own images), so
no id, address or image repeats across HITs for sentinels any more than for test trials; the
side p0 is shown on (2AFC) is a property of the trial id, written once in tasks.json
(items[id]["p0side"]) and the same in every platform file. The whole output is a pure function
of the dataset and the settings.
"""
from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from bapps_build.errors import UserError
from bapps_build.files import decode_png, read_regular_file, sha256_bytes, write_atomic, write_json_atomic
from bapps_build.layout import image_folders

from .catalog import TASKS_DIR, Subset, opaque_id
from .layouts import render_layout, trial_columns
from .sentinels import PRACTICE_STREAM, SENTINEL_STREAM, make_obvious_trials, sentinel_kinds

PLATFORMS = ("mturk", "toloka", "generic", "serve")  # serve: `bapps-build serve` renders the pages itself
SIDE_STREAM, ORDER_STREAM, SALT_STREAM = 3, 4, 5
DEFAULT_PRACTICE = {"2afc": 0, "jnd": 10}  # the paper's JND workers had 10 training pairs
DEFAULT_SENTINEL_RATE = {"2afc": 0.1, "jnd": 0.2}  # JND: 40 sentinels per 160 test pairs


class TasksError(UserError, ValueError):
    """The settings cannot make a task set; the message says what to change."""


@dataclass(frozen=True)
class TaskSettings:
    platform: str
    judgments: int  # judgments wanted per example (MTurk MaxAssignments, Toloka overlap)
    per_hit: int  # test trials per HIT
    sentinel_rate: float  # share of the non-practice trials of a HIT that are sentinels, in [0, 1)
    practice: int  # practice trials at the start of every HIT (not counted, not scored)
    base_url: Optional[str]  # where TASKS/images/ will be served; None: relative links (generic)
    seed: int = 0
    name: str = "tasks"


def sentinels_per_hit(per_hit: int, rate: float) -> int:
    """Sentinels s with s / (per_hit + s) = rate, rounded (0.2 with 160 test trials gives 40)."""
    if rate <= 0:
        return 0
    return max(1, int(round(per_hit * rate / (1.0 - rate))))


def check_settings(s: TaskSettings, task: str) -> None:
    if s.platform not in PLATFORMS:
        raise TasksError(f"unknown platform {s.platform!r}; use one of {', '.join(PLATFORMS)}")
    if not 0.0 <= s.sentinel_rate < 1.0:
        raise TasksError(f"--sentinel-rate {s.sentinel_rate}: must be in [0, 1)")
    if s.judgments < 1 or s.per_hit < 1 or s.practice < 0:
        raise TasksError("--judgments and --per-hit must be at least 1, --practice at least 0")
    if s.platform in ("mturk", "toloka") and not s.base_url:
        raise TasksError(f"{s.platform} workers load the images from the web: host TASKS/images/ on a server "
                         f"and give its address with --base-url (e.g. https://example.org/bapps/images)")
    if s.base_url and any(c in s.base_url for c in "\"'<> "):
        raise TasksError(f"--base-url {s.base_url!r}: quotes, spaces and angle brackets are not allowed")
    if not s.name or any(c in s.name for c in "/\\") or s.name.startswith("."):
        raise TasksError(f"--name {s.name!r}: use a plain file name")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def served_size(h: int, w: int) -> int:
    """The size of every served PNG of an h x w patch: the largest any encoding of it can take
    (zlib's compressBound of the filtered rows) plus a salt of 16 bytes."""
    raw = h * (w * 3 + 1)
    bound = raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13
    return len(PNG_SIGNATURE) + (12 + 13) + (12 + len(b"Comment\0") + 32) + (12 + bound) + 12


def served_png(rgb_u8: np.ndarray, rng: np.random.Generator) -> bytes:
    """PNG bytes of a patch that tell nothing but its pixels: each row's filter (None, Sub or Up)
    and the zlib level drawn at random, a random salt in a tEXt chunk, padded to served_size().
    Two files of the same pixels (an identical pair) decode to the same image but share neither
    bytes nor size differences nor names; every served file of a task set has the same length,
    whatever it shows."""
    img = np.ascontiguousarray(rgb_u8, dtype=np.uint8)
    h, w, c = img.shape
    rows = img.reshape(h, w * c)
    sub = rows.copy()
    sub[:, c:] = rows[:, c:] - rows[:, :-c]
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]
    choice = rng.integers(0, 3, h)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = choice
    raw[:, 1:] = np.stack([rows, sub, up])[choice, np.arange(h)]
    idat = zlib.compress(raw.tobytes(), int(rng.integers(1, 10)))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = png_chunk(b"IHDR", header)
    tail = png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    target = served_size(h, w)
    pad = target - len(PNG_SIGNATURE) - len(body) - len(tail) - 12 - len(b"Comment\0")
    if pad < 32:
        raise AssertionError("served_size() is below the encoded size")  # zlib's bound says never
    salt = rng.bytes(pad // 2 + 1).hex()[:pad].encode("ascii")
    return PNG_SIGNATURE + body + png_chunk(b"tEXt", b"Comment\0" + salt) + tail


class ImageFolder:
    """TASKS/images/: one file per trial and image slot (served_png), named by its content hash."""

    def __init__(self, folder: Path, base_url: Optional[str], relative_prefix: str, seed: int = 0):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.base = base_url.rstrip("/") + "/" if base_url else None
        self.relative_prefix = relative_prefix
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, SALT_STREAM]))

    def add_served(self, rgb_u8) -> str:
        """A file of its own for one image slot of one trial."""
        return self.add_bytes(served_png(rgb_u8, self.rng))

    def add_bytes(self, data: bytes) -> str:
        name = sha256_bytes(data)[:16] + ".png"
        path = self.folder / name
        if not path.exists():
            write_atomic(path, data)
        return name

    def url(self, name: str, relative_to_root: bool = False) -> str:
        if self.base:
            return self.base + name
        return ("images/" if relative_to_root else self.relative_prefix) + name


MAX_IMAGE_BYTES = 64 * 2**20


def dataset_png(subset_path: Path, folder: str, stem: str):
    """A patch of the dataset, read only if it lies inside the subset folder: the task set is
    published, so an image that is a link to a file elsewhere must never be copied into it."""
    path = Path(subset_path) / folder / f"{stem}.png"
    root = Path(subset_path).resolve()
    target = path.resolve()
    if root != target and root not in target.parents:
        raise TasksError(f"{path} leads outside the dataset (to {target}); tasks publishes only the "
                         "dataset's own files: replace the link with the image itself")
    return decode_png(read_regular_file(path, MAX_IMAGE_BYTES))


def check_output(subset: Subset, out: Path, s: TaskSettings) -> None:
    check_settings(s, subset.task)
    if out.exists() and any(out.iterdir()) and not (out / "tasks.json").exists():
        raise TasksError(f"{out} exists and holds other files; give an empty or new folder with --out")
    if not subset.stems:
        raise TasksError(f"{subset.path} has no examples")


def build_task_set(subset: Subset, out, s: TaskSettings) -> dict:
    """Write every file of a task set for `subset` into `out`; returns the task record."""
    out = Path(out)
    check_output(subset, out, s)
    task, n = subset.task, len(subset.stems)
    images = ImageFolder(out / "images", s.base_url, "../images/", s.seed)
    items: Dict[str, dict] = {}
    files: Dict[str, Dict[str, str]] = {}  # item id -> folder -> image file name
    # the order trials are made in is the order their images draw from the salt stream
    test_ids = add_test_trials(subset, s, items, files, images)
    per_hit = min(s.per_hit, n)
    n_sent = sentinels_per_hit(per_hit, s.sentinel_rate)
    order = np.random.default_rng(np.random.SeedSequence([s.seed, ORDER_STREAM])).permutation(n)
    hit_tests = [[test_ids[int(i)] for i in order[h:h + per_hit]] for h in range(0, n, per_hit)]
    hit_sentinels = add_sentinel_trials(subset, s, [n_sent + per_hit - len(t) for t in hit_tests],
                                        items, files, images)
    practice_ids = make_practice(subset, s, items, files, images)
    if task == "2afc":
        assign_sides(items, s.seed)
    hits = compose_hits(task, items, practice_ids, hit_tests, hit_sentinels, s.seed)

    record = {
        "format": "bapps-build tasks 1",
        "name": s.name, "task": task, "subset": subset.rel, "dataset": str(subset.path.parent.parent.parent),
        "settings": asdict(s),
        "derived": {"test_trials_per_hit": per_hit, "sentinels_per_hit": n_sent, "practice_per_hit": len(practice_ids),
                    "trials_per_hit": len(practice_ids) + per_hit + n_sent, "hits": len(hits),
                    "sentinel_pool": sum(map(len, hit_sentinels)), "examples": n,
                    "image_bytes": served_size(*dataset_png(subset.path, image_folders(task)[0],
                                                                     subset.stems[0]).shape[:2])},
        "items": items,
        "files": files,
        "hits": hits,
    }
    record_in_dataset(subset, record)  # first: a clash of names stops before the platform files
    writers = {"mturk": write_mturk, "toloka": write_toloka, "generic": write_generic,
               "serve": lambda *args: None}
    writers[s.platform](out, record, images)
    write_json_atomic(out / "tasks.json", record)
    (out / "README.txt").write_text(next_steps(record), encoding="utf-8")
    return record


def add_test_trials(subset: Subset, s: TaskSettings, items, files, images: ImageFolder) -> List[str]:
    """One trial per example, its pixels served like every other trial's (served_png)."""
    ids = []
    for stem in subset.stems:
        item = opaque_id(s.name, s.seed, f"test:{subset.rel}/{stem}")
        items[item] = {"kind": "test", "stem": stem}
        files[item] = {f: images.add_served(dataset_png(subset.path, f, stem)) for f in image_folders(subset.task)}
        ids.append(item)
    return ids


def add_sentinel_trials(subset: Subset, s: TaskSettings, counts: List[int], items, files,
                        images: ImageFolder) -> List[List[str]]:
    """counts[h] sentinels made for HIT h, in the paper's mix (the last HIT is filled up with
    extra ones); returns each HIT's sentinel ids."""
    hit_kinds = hit_sentinel_kinds(subset.task, counts, s.seed)
    made = make_obvious_trials(subset.path, subset.task, subset.stems, [k for kinds in hit_kinds for k in kinds],
                               s.seed, SENTINEL_STREAM)
    ids = []
    for k, trial in enumerate(made):
        item = opaque_id(s.name, s.seed, f"sentinel:{k}")
        items[item] = {"kind": "sentinel", "expected": trial["expected"], "recipe": trial["recipe"]}
        files[item] = {f: images.add_served(trial["images"][f]) for f in image_folders(subset.task)}
        ids.append(item)
    starts = np.cumsum([0] + [len(kinds) for kinds in hit_kinds])
    return [ids[starts[h]:starts[h + 1]] for h in range(len(hit_kinds))]


def assign_sides(items: Dict[str, dict], seed: int) -> None:
    """2AFC: the side p0 is shown on, one per trial id, the same in every file that names it."""
    side_rng = np.random.default_rng(np.random.SeedSequence([seed, SIDE_STREAM]))
    for item in items:
        items[item]["p0side"] = "left" if side_rng.random() < 0.5 else "right"


def compose_hits(task: str, items, practice_ids: List[str], hit_tests: List[List[str]],
                 hit_sentinels: List[List[str]], seed: int) -> List[dict]:
    """Each HIT: the practice trials, then its tests and sentinels in an order of its own."""
    hits = []
    for h, (tests, sentinels) in enumerate(zip(hit_tests, hit_sentinels)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, ORDER_STREAM, h]))
        body = tests + sentinels
        body = [body[int(i)] for i in rng.permutation(len(body))]
        trials = []
        for item in practice_ids + body:
            trial = {"item": item}
            if task == "2afc":
                trial["p0side"] = items[item]["p0side"]
            trials.append(trial)
        hits.append({"hit": h + 1, "trials": trials})
    return hits


def hit_sentinel_kinds(task: str, counts: List[int], seed: int) -> List[List[str]]:
    """The kinds of each HIT's sentinels. A HIT with 2 or more has both JND kinds in the paper's
    proportion; the HITs with a single sentinel share one such mix between them (at random), so
    the set as a whole keeps heavy-noise pairs: a worker who always says "same" is caught."""
    out = [sentinel_kinds(task, c) if c != 1 else None for c in counts]
    single = [h for h, c in enumerate(counts) if c == 1]
    if single:
        shared = sentinel_kinds(task, len(single))
        rng = np.random.default_rng(np.random.SeedSequence([seed, SENTINEL_STREAM, 1 << 22]))
        for h, k in zip(single, rng.permutation(len(shared))):
            out[h] = [shared[int(k)]]
    return out


def make_practice(subset: Subset, s: TaskSettings, items, files, images) -> List[str]:
    """Practice trials: for JND the paper's mix (4 same, 1 obviously different, 5 made by the
    distortions, in that proportion); for 2AFC obvious heavy-against-light triplets."""
    if s.practice <= 0:
        return []
    task = subset.task
    if task == "2afc":
        kinds = ["heavy_vs_light"] * s.practice
        n_real = 0
    else:
        n_same = int(round(0.4 * s.practice))
        n_heavy = min(max(1, int(round(0.1 * s.practice))), s.practice - n_same)
        n_real = s.practice - n_same - n_heavy
        kinds = ["identical"] * n_same + ["heavy_noise"] * n_heavy
    ids = []
    for k, trial in enumerate(make_obvious_trials(subset.path, task, subset.stems, kinds, s.seed, PRACTICE_STREAM)):
        item = opaque_id(s.name, s.seed, f"practice:{k}")
        items[item] = {"kind": "practice", "expected": trial["expected"], "recipe": trial["recipe"]}
        files[item] = {f: images.add_served(trial["images"][f]) for f in image_folders(task)}
        ids.append(item)
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, PRACTICE_STREAM, 1 << 21]))
    for k, i in enumerate(rng.choice(len(subset.stems), size=n_real, replace=n_real > len(subset.stems))):
        stem = subset.stems[int(i)]
        item = opaque_id(s.name, s.seed, f"practice:real:{k}")
        items[item] = {"kind": "practice", "stem": stem}
        files[item] = {f: images.add_served(dataset_png(subset.path, f, stem)) for f in image_folders(task)}
        ids.append(item)
    order = rng.permutation(len(ids))
    return [ids[int(i)] for i in order]


def trial_row(record: dict, trial: dict, i, images: ImageFolder, relative_to_root=False) -> Dict[str, str]:
    """The input columns of one trial, as the page's ${...} variables name them (suffix i)."""
    f = record["files"][trial["item"]]
    url = lambda folder: images.url(f[folder], relative_to_root)  # noqa: E731
    if record["task"] == "2afc":
        left, right = ("p0", "p1") if trial["p0side"] == "left" else ("p1", "p0")
        return {f"item{i}": trial["item"], f"p0side{i}": trial["p0side"], f"ref{i}": url("ref"),
                f"left{i}": url(left), f"right{i}": url(right)}
    return {f"item{i}": trial["item"], f"first{i}": url("p0"), f"second{i}": url("p1")}


def hit_row(record, hit, images, relative_to_root=False) -> Dict[str, str]:
    row = {"hit": str(hit["hit"])}
    for i, trial in enumerate(hit["trials"], 1):
        row.update(trial_row(record, trial, i, images, relative_to_root))
    return row


def csv_text(header: List[str], rows: List[Dict[str, str]], delimiter=",") -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, delimiter=delimiter, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def n_trials(record) -> int:
    return record["derived"]["trials_per_hit"]


def write_mturk(out: Path, record: dict, images: ImageFolder) -> None:
    folder = out / "mturk"
    folder.mkdir(exist_ok=True)
    task, t = record["task"], n_trials(record)
    header = ["hit"] + [c for i in range(1, t + 1) for c in trial_columns(task, i)]
    rows = [hit_row(record, hit, images) for hit in record["hits"]]
    (folder / "input.csv").write_text(csv_text(header, rows), encoding="utf-8")
    (folder / "layout.html").write_text(
        render_layout(task, t, record["derived"]["practice_per_hit"], crowd_form=True), encoding="utf-8")


def toloka_golden(record: dict, item: str, p0side: str) -> str:
    expected = record["items"][item].get("expected", "")
    if record["task"] == "2afc" and expected:
        return p0side if expected == "p0" else ("right" if p0side == "left" else "left")
    return expected


def write_toloka(out: Path, record: dict, images: ImageFolder) -> None:
    """One task per trial (Toloka builds the suites: tasks per suite = --per-hit, overlap =
    --judgments); sentinels are control tasks (GOLDEN:choice), practice goes to a training pool."""
    folder = out / "toloka"
    folder.mkdir(exist_ok=True)
    task = record["task"]
    cols = [c[:-1] for c in trial_columns(task, 1)]
    header = [f"INPUT:{c}" for c in cols] + ["GOLDEN:choice"]
    seen, main, training = set(), [], []
    for hit in record["hits"]:
        for trial in hit["trials"]:
            item = trial["item"]
            if item in seen:
                continue
            seen.add(item)
            values = trial_row(record, trial, "", images)
            row = {f"INPUT:{c}": values[c] for c in cols}
            kind = record["items"][item]["kind"]
            row["GOLDEN:choice"] = toloka_golden(record, item, trial.get("p0side", "")) if kind != "test" else ""
            (training if kind == "practice" else main).append(row)
    (folder / "tasks.tsv").write_text(csv_text(header, main, "\t"), encoding="utf-8")
    (folder / "training.tsv").write_text(csv_text(header, training, "\t"), encoding="utf-8")
    # A one-trial page with Toloka's {{field}} placeholders: a starting point for its HTML editor
    page = render_layout(task, 1, 0, crowd_form=False, row={f"{c}1": "{{" + c + "}}" for c in cols})
    (folder / "layout.html").write_text(page, encoding="utf-8")


def write_generic(out: Path, record: dict, images: ImageFolder) -> None:
    folder = out / "generic"
    folder.mkdir(exist_ok=True)
    task, t = record["task"], n_trials(record)
    cols = [c[:-1] for c in trial_columns(task, 1)]
    rows = []
    for hit in record["hits"]:
        for pos, trial in enumerate(hit["trials"], 1):
            values = trial_row(record, trial, "", images, relative_to_root=True)
            rows.append({"hit": hit["hit"], "position": pos, **values})
    (folder / "trials.csv").write_text(csv_text(["hit", "position"] + cols, rows), encoding="utf-8")
    layout = render_layout(task, t, record["derived"]["practice_per_hit"], crowd_form=False)
    (folder / "layout.html").write_text(layout, encoding="utf-8")
    width = len(str(len(record["hits"])))
    for hit in record["hits"]:
        page = render_layout(task, t, record["derived"]["practice_per_hit"], crowd_form=False,
                             row=hit_row(record, hit, images))
        (folder / f"hit-{hit['hit']:0{max(4, width)}d}.html").write_text(page, encoding="utf-8")


def record_in_dataset(subset: Subset, record: dict) -> Path:
    """Copy the record to <subset>/judgments/tasks/<name>.json; a different set of that name is an error."""
    folder = subset.store / TASKS_DIR
    path = folder / f"{record['name']}.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("items") != record["items"]:
            raise TasksError(f"{path}: a different task set named {record['name']!r} is recorded for this subset "
                             f"(its ids would clash in results files); pick another --name")
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return path


def next_steps(record: dict) -> str:
    d, s = record["derived"], record["settings"]
    lines = [f"Task set {record['name']!r} for {record['subset']} ({record['task']}), made by bapps-build tasks.",
             f"{d['hits']} HITs of {d['trials_per_hit']} trials: {d['practice_per_hit']} practice, "
             f"{d['test_trials_per_hit']} test, {d['sentinels_per_hit']} sentinels.",
             f"Wanted: {s['judgments']} judgments per example.", "",
             "1. Host the folder images/ so that its files are reachable at the image addresses "
             "(--base-url)." if s["base_url"] else
             "1. Keep images/ in this folder (`bapps-build serve` sends them itself)." if s["platform"] == "serve" else
             "1. Keep images/ beside generic/ (the pages link to ../images/)."]
    if record["settings"]["platform"] == "mturk":
        lines += ["2. MTurk requester site: New project > Custom; paste mturk/layout.html as the design layout;",
                  f"   set 'Number of assignments per task' to {s['judgments']}.",
                  "3. Publish a batch with mturk/input.csv (one row per HIT).",
                  "4. Approve/reject, download the batch results CSV, then:"]
    elif record["settings"]["platform"] == "toloka":
        lines += ["2. Toloka: make a project whose input fields are the INPUT: columns of toloka/tasks.tsv and",
                  "   whose output field is `choice` (2AFC: left/right; JND: same/different). toloka/layout.html",
                  "   is the page for one trial with {{field}} placeholders, a starting point for the editor.",
                  f"3. Pool: overlap {s['judgments']}, {d['test_trials_per_hit']} general tasks and "
                  f"{d['sentinels_per_hit']} control tasks per suite; upload toloka/tasks.tsv",
                  "   (GOLDEN:choice marks the control tasks) and toloka/training.tsv to a training pool.",
                  "4. Download the results TSV, then:"]
    elif record["settings"]["platform"] == "serve":
        lines += ["2. Serve it (pip install 'bapps-build[serve]'); participants open the printed study URL",
                  "   (lab: ?participant=ID; Prolific: PROLIFIC_PID, STUDY_ID, SESSION_ID):",
                  f"   bapps-build serve TASKS --dataset {record['dataset']} --db study.sqlite",
                  "3. Ingest the study database (as often as you like; only new answers are added):",
                  f"   bapps-build ingest study.sqlite --dataset {record['dataset']}", ""]
        return "\n".join(lines + ["tasks.json (also in the dataset, judgments/tasks/) says what every trial id means.", ""])
    else:
        lines += ["2. Give each participant a page generic/hit-NNNN.html (served over http, or opened as a file).",
                  "   The page offers the answers as a JSON Lines file at the end (worker, item, response, side).",
                  f"   Have {s['judgments']} different people do each page.",
                  "3. Collect the .jsonl files, then:"]
    lines += [f"   bapps-build ingest RESULTS... --dataset {record['dataset']}", "",
              "tasks.json (also in the dataset, judgments/tasks/) says what every trial id means;",
              "the ingester reads it from the dataset, or from --tasks TASKS.", ""]
    return "\n".join(lines)
