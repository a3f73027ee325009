"""The core's hooks (bapps_build.hooks) and the per-worker state that replaced module globals."""
import json
import pickle

import pytest

import judgments  # noqa: F401  (registers the judgment counts)
from bapps_build import BuildConfig, hooks, run_build
from bapps_build.build import BuildContext
from bapps_build.export import ExportError, export_to_shards, export_to_tree
from bapps_build.layout import subset_dir
from bapps_build.shards import read_shard
from bapps_build.sources import SourceCache

QUIET = dict(progress=False, log=lambda m: None)


def test_a_registered_field_travels_through_shards_and_back(tmp_path, monkeypatch):
    """A field registered by a package (not only judgments' counts) is read per stem, carried in
    each sample's json beside the recipe, and handed back in example order; none of it enters the
    manifest."""
    run_build(BuildConfig(n=9, seed=1), tmp_path / "tree", workers=1, **QUIET)
    sub = subset_dir(tmp_path / "tree", "2afc", "train", "traditional")
    (sub / "notes.json").write_text(json.dumps({"000001": "blurry", "000007": "fine"}))
    monkeypatch.setattr(hooks, "_SHARD_FIELDS", dict(hooks._SHARD_FIELDS))
    hooks.register_shard_field(hooks.ShardField("note", read_notes, write_notes))
    with pytest.raises(ValueError, match="export's own"):
        hooks.register_shard_field(hooks.ShardField("recipe", read_notes, write_notes))

    export_to_shards(tmp_path / "tree", tmp_path / "shards", maxcount=4, workers=2, progress=False)
    metas = {key: json.loads(fields["json"]) for shard in sorted((tmp_path / "shards").rglob("*.tar"))
             for key, fields in read_shard(shard)}
    assert {k: m["note"] for k, m in metas.items() if "note" in m} == {"000001": "blurry", "000007": "fine"}
    assert set(metas["000001"]) == {"recipe", "note"}

    export_to_tree(tmp_path / "shards", tmp_path / "back", workers=1, progress=False)
    back = subset_dir(tmp_path / "back", "2afc", "train", "traditional")
    assert json.loads((back / "notes.written.json").read_text()) == [["000001", "blurry"], ["000007", "fine"]]
    assert (back / "manifest.jsonl").read_bytes() == (sub / "manifest.jsonl").read_bytes()


def read_notes(subset, task):
    path = subset / "notes.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_notes(subset, task, items):
    (subset / "notes.written.json").write_text(json.dumps(items))


def test_an_unregistered_field_is_reported_and_kept_out_of_the_manifest(tmp_path, monkeypatch):
    run_build(BuildConfig(n=3, seed=2), tmp_path / "tree", workers=1, **QUIET)
    sub = subset_dir(tmp_path / "tree", "2afc", "train", "traditional")
    (sub / "notes.json").write_text(json.dumps({"000000": "x"}))
    monkeypatch.setattr(hooks, "_SHARD_FIELDS", {"note": hooks.ShardField("note", read_notes, write_notes)})
    export_to_shards(tmp_path / "tree", tmp_path / "shards", workers=1, progress=False)
    monkeypatch.setattr(hooks, "_SHARD_FIELDS", {})
    said = []
    export_to_tree(tmp_path / "shards", tmp_path / "back", workers=1, progress=False, log=said.append)
    assert any("'note'" in line and "no imported package" in line for line in said)
    back = subset_dir(tmp_path / "back", "2afc", "train", "traditional")
    assert (back / "manifest.jsonl").read_bytes() == (sub / "manifest.jsonl").read_bytes()


def test_exporting_judged_data_without_its_package_says_what_the_shards_lack(tmp_path, monkeypatch):
    """Tree -> shards with no shard field registered (a notebook that did not import judgments):
    the export still runs, and names the folder the shards will not carry."""
    run_build(BuildConfig(n=3, seed=2), tmp_path / "tree", workers=1, **QUIET)
    sub = subset_dir(tmp_path / "tree", "2afc", "train", "traditional")
    (sub / "judgments").mkdir()
    monkeypatch.setattr(hooks, "_SHARD_FIELDS", {})
    said = []
    export_to_shards(tmp_path / "tree", tmp_path / "shards", workers=1, progress=False, log=said.append)
    assert any("2afc/train/traditional holds judgments/" in line and "import judgments" in line for line in said)
    said.clear()
    monkeypatch.setattr(hooks, "_SHARD_FIELDS", {"note": hooks.ShardField("note", read_notes, write_notes)})
    export_to_shards(tmp_path / "tree", tmp_path / "shards2", workers=1, progress=False, log=said.append)
    assert not any("holds" in line for line in said)  # a registered field: no false alarm


def test_a_field_is_read_once_per_subset_not_once_per_shard(tmp_path, monkeypatch):
    """A judged subset's counts file is read once by the process that exports it, however many
    shards it is cut into."""
    run_build(BuildConfig(n=12, seed=3), tmp_path / "tree", workers=1, **QUIET)
    reads = []

    def counting_read(subset, task):
        reads.append(str(subset))
        return {"000004": "x"}

    monkeypatch.setattr(hooks, "_SHARD_FIELDS", {"note": hooks.ShardField("note", counting_read, write_notes)})
    export_to_shards(tmp_path / "tree", tmp_path / "shards", maxcount=3, workers=1, progress=False)
    assert len(list((tmp_path / "shards").rglob("*.tar"))) == 4
    assert len(reads) == 1
    metas = [json.loads(fields["json"]) for shard in sorted((tmp_path / "shards").rglob("*.tar"))
             for _, fields in read_shard(shard)]
    assert [m.get("note") for m in metas].count("x") == 1


def test_a_damaged_manifest_line_stops_the_export_naming_the_line(tmp_path):
    run_build(BuildConfig(n=5, seed=3), tmp_path / "tree", workers=1, **QUIET)
    manifest = subset_dir(tmp_path / "tree", "2afc", "train", "traditional") / "manifest.jsonl"
    lines = manifest.read_text().splitlines(True)
    lines[3] = '["not", "a record"]\n'
    manifest.write_text("".join(lines))
    with pytest.raises(ExportError, match=r"manifest.jsonl, line 4: not a record .*the manifest is damaged"):
        export_to_shards(tmp_path / "tree", tmp_path / "shards", workers=1, progress=False)


def test_replay_preparers_see_the_build_settings(tmp_path, monkeypatch):
    from bapps_build.replay import prepare_families

    run_build(BuildConfig(n=2, seed=3), tmp_path / "tree", workers=1, **QUIET)
    seen = []
    monkeypatch.setattr(hooks, "_REPLAY_PREPARERS", {})
    hooks.register_replay_preparer("test", seen.append)
    hooks.register_replay_preparer("test", seen.append)  # a re-import replaces, it does not add
    prepare_families(subset_dir(tmp_path / "tree", "2afc", "train", "traditional"))
    assert len(seen) == 1 and seen[0]["seed"] == 3


def test_the_source_cache_is_the_jobs_own_and_stays_in_its_process():
    """One cache per job copy (a worker process holds one copy for the whole run), never pickled."""
    job = BuildContext(out="x", n=1, task="2afc", folders=("ref", "p0", "p1"), width=6, chunk_size=1,
                       cfg=BuildConfig(n=1))
    cache = job.source_cache(1000)
    assert isinstance(cache, SourceCache) and job.source_cache(1000) is cache
    copy = pickle.loads(pickle.dumps(job))
    assert "_source_cache" not in copy.__dict__ and copy.cfg == job.cfg
    assert copy.source_cache(1000) is not cache
    assert BuildContext(out="y", n=1, task="2afc", folders=(), width=6, chunk_size=1,
                        cfg=BuildConfig(n=1)).source_cache(1000) is not cache
