"""Names that mean one thing and errors that do not hide bugs.

- every renamed option answers to its new name and, hidden and with a warning, to its old one;
- every option an error message or help text names exists;
- `--subset` takes a subset's bare name or TASK/SPLIT/SUBSET, through one resolve_subset;
- a UserError is `Error: message`; anything else is a bug and keeps its traceback, in a worker too.
"""
import ast
import pickle
import re
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import distortions
from bapps_build.cli import main
from bapps_build.cli_aliases import RENAMES
from bapps_build.errors import ConfigError, UserError, WorkError, is_user_error, worker_bug
from bapps_build.subsets import SubsetError, resolve_subset

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bapps_build", "distortions", "generators", "judgments")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def command_at(path: str) -> click.Command:
    cmd = main
    for name in path.split():
        cmd = cmd.commands[name]
    return cmd


def all_commands(group=main, prefix=""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, f"{prefix}{name} ")


def option_names(cmd: click.Command) -> set:
    return {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
            if o.startswith("--")}


# ------------------------------------------------------------------ renamed options


@pytest.fixture
def renamed_args(tmp_path):
    """Each renamed command's required arguments, and the value given to the renamed option."""
    folder = tmp_path / "folder"
    folder.mkdir()
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    f, out = str(folder), str(tmp_path / "out.png")
    return {
        "real": (["--reference", f, "--outputs", f, "--n", "3"], "superres", "subset"),
        "distort": (["--n", "3"], f, "bank"),
        "apply": ([str(image), "--chain", "jpeg", "--out", out], f, "bank"),
        "preview": ([f, "--out", out], "7", "n"),
        "generators sample": (["--out", f], "7", "n"),
        "generators preview": ([f, "--out", out], "7", "n"),
    }


@pytest.mark.parametrize("command,old,new", RENAMES, ids=[f"{c}:{o}" for c, o, _ in RENAMES])
def test_a_renamed_option_answers_to_both_names(command, old, new, renamed_args, capsys):
    args, value, dest = renamed_args[command]
    cmd = command_at(command)
    params = cmd.make_context(command, [*args, new, value]).params
    assert str(params[dest]) == value
    assert "deprecated" not in capsys.readouterr().err
    params = cmd.make_context(command, [*args, old, value]).params
    assert str(params[dest]) == value
    warning = capsys.readouterr().err.strip().splitlines()
    assert warning == [f"warning: {old} is deprecated and will be removed; use {new}"]
    with pytest.raises(click.UsageError, match="given twice"):
        cmd.make_context(command, [*args, new, value, old, value])


@pytest.mark.parametrize("command,old,new", RENAMES, ids=[f"{c}:{o}" for c, o, _ in RENAMES])
def test_help_shows_the_new_name_only(command, old, new):
    words = command.split()
    text = CliRunner().invoke(main, [*words, "--help"]).output
    assert re.search(rf"(?<![\w-]){re.escape(new)}\b", text), text
    assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text), text


def test_old_spellings_still_build_the_same(tmp_path):
    """`generators sample --count` and `--n` write the same bank (the old spelling keeps scripts working)."""
    runner = CliRunner()
    for name, spelling in (("old", "--count"), ("new", "--n")):
        res = runner.invoke(main, ["generators", "sample", spelling, "3", "--seed", "2", "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert ("deprecated" in res.output) == (name == "old")
    files = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "old").iterdir()) and files
    for f in files:
        assert (tmp_path / "new" / f).read_bytes() == (tmp_path / "old" / f).read_bytes()


# ------------------------------------------------------------------ option names in messages


def _strings(tree):
    """String literals of a module, without the old spellings listed for RenamedOption (old=[...])."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "old":
            skip.update(id(n) for n in ast.walk(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def test_every_option_the_code_names_exists():
    """A message, help text or docstring that says `--x` means an option some command has."""
    known = {"--help", "--version", "--traceback"}
    for _name, cmd in all_commands():
        known |= option_names(cmd)
    wrong = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "cli_aliases.py":  # the table of old spellings
                continue
            for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
                wrong += [f"{path.relative_to(REPO)}:{line}: {o}" for o in OPTION.findall(text) if o not in known]
    assert not wrong, "\n".join(wrong)


def _mentioned(texts):
    return {o for t in texts for o in OPTION.findall(t)}


def test_resume_refusals_name_options_of_the_command(tmp_path):
    from bapps_build.config import BuildConfig
    from bapps_build.jobs import setting_differences

    settings = BuildConfig(n=5).settings(["jpeg"], "digest")
    settings.update({"generators": {"bank": "b"}, "plugin_digests": {}})  # a cnn build with a plugin
    changed = {k: ["changed"] for k in settings}
    assert _mentioned(setting_differences(settings, changed)) <= option_names(command_at("distort"))
    real_keys = ["kind", "n", "name", "seed", "split", "patch_size", "scale_range", "flat_threshold",
                 "max_flat_attempts", "format", "maxcount", "sources_digest"]
    from bapps_build import real

    assert all(f'"{k}"' in Path(real.__file__).read_text() for k in real_keys)  # the keys real records
    diffs = setting_differences({k: 1 for k in real_keys}, {k: 2 for k in real_keys})
    assert "--subset" in _mentioned(diffs)
    assert _mentioned(diffs) <= option_names(command_at("real"))
    assert not any("--min-chain" in d or "--max-flat-attempts" in d for d in diffs)


@pytest.mark.parametrize("source,command", [
    ("bapps_build.config:BuildConfig", "distort"),
    ("bapps_build.real:RealConfig", "real"),
    ("generators.training:TrainSettings", "generators train"),
])
def test_setting_checks_name_options_of_their_command(source, command):
    import importlib
    import inspect

    module, name = source.split(":")
    text = inspect.getsource(getattr(importlib.import_module(module), name))
    mentioned = _mentioned([text])
    assert mentioned and mentioned <= option_names(command_at(command)), mentioned - option_names(command_at(command))


def test_real_raises_config_errors_like_distort():
    from bapps_build.config import BuildConfig
    from bapps_build.real import RealConfig

    for make in (lambda: RealConfig(n=0, name="x"), lambda: RealConfig(n=1, name="a/b"),
                 lambda: RealConfig(n=1, name="x", scale_range=(2, 1)), lambda: BuildConfig(n=0)):
        with pytest.raises(ConfigError):
            make()
    with pytest.raises(ConfigError, match="--subset"):
        RealConfig(n=1, name="../x")


# ------------------------------------------------------------------ one resolve_subset


@pytest.fixture
def tree(tmp_path):
    """A dataset with traditional in two splits and cnn in one (empty manifests: enough to be found)."""
    root = tmp_path / "ds"
    for rel in ("2afc/train/traditional", "2afc/val/traditional", "2afc/train/cnn"):
        (root / rel).mkdir(parents=True)
        (root / rel / "manifest.jsonl").write_text("")
    return root


def test_subset_by_bare_name_or_qualified(tree):
    assert resolve_subset(tree, "cnn") == tree / "2afc/train/cnn"
    assert resolve_subset(tree, "2afc/val/traditional") == tree / "2afc/val/traditional"
    assert resolve_subset(tree / "2afc/val/traditional") == tree / "2afc/val/traditional"  # a subset folder itself
    with pytest.raises(SubsetError, match=r"several subsets named 'traditional' \(2afc/train/traditional, "
                                          r"2afc/val/traditional\)"):
        resolve_subset(tree, "traditional")
    with pytest.raises(SubsetError, match="no subset 'mix'; its subsets: 2afc/train/cnn, 2afc/train/traditional, "
                                          "2afc/val/traditional"):
        resolve_subset(tree, "mix")
    with pytest.raises(SubsetError, match="holds several subsets"):
        resolve_subset(tree)
    with pytest.raises(SubsetError, match="holds no BAPPS subset"):
        resolve_subset(tree / "2afc")


def test_judgments_share_the_one_resolve_subset(tree):
    from judgments.catalog import resolve_subset as load_chosen

    assert load_chosen(tree, "cnn").rel == "2afc/train/cnn"
    with pytest.raises(SubsetError, match="its subsets"):
        load_chosen(tree, "nope")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "ds"
    res = CliRunner().invoke(main, ["distort", "--n", "4", "--seed", "1", "--workers", "1", "--out", str(root),
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    return root


@pytest.mark.parametrize("command", [
    ["replay", "{ds}", "--id", "1"],
    ["preview", "{ds}", "--out", "{tmp}/s.png", "--n", "2"],
    ["stats", "{ds}"],
])
def test_commands_take_a_bare_subset_name(small_dataset, tmp_path, command):
    args = [a.format(ds=small_dataset, tmp=tmp_path) for a in command]
    for subset in ("traditional", "2afc/train/traditional"):
        res = CliRunner().invoke(main, [*args, "--subset", subset])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*args, "--subset", "cnn"])
    assert res.exit_code == 1 and "Error: " in res.output and "its subsets: 2afc/train/traditional" in res.output
    assert "Traceback" not in res.output


# ------------------------------------------------------------------ user errors and bugs


def test_a_bug_keeps_its_traceback(small_dataset, monkeypatch):
    import bapps_build.cli as cli

    def bug(*args, **kwargs):
        return {}["p0"]

    monkeypatch.setattr(cli, "replay_example", bug)
    res = CliRunner().invoke(main, ["replay", str(small_dataset), "--id", "1"])
    assert isinstance(res.exception, KeyError) and res.exit_code == 1  # not turned into `Error: 'p0'`
    assert "Error: 'p0'" not in res.output


@pytest.mark.parametrize("how", ["option", "env", "none"])
def test_traceback_of_a_user_error_on_request(small_dataset, monkeypatch, how):
    args = ["replay", str(small_dataset), "--id", "99"]
    if how == "option":
        args = ["--traceback", *args]
    monkeypatch.delenv("BAPPS_BUILD_TRACEBACK", raising=False)
    if how == "env":
        monkeypatch.setenv("BAPPS_BUILD_TRACEBACK", "1")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "Error: no example with id 99" in res.output
    assert ("Traceback (most recent call last)" in res.output) == (how != "none"), res.output


def test_every_error_raised_for_people_is_a_user_error():
    import bapps_build.jobs
    import bapps_build.replay
    import bapps_build.shards
    import bapps_build.sources
    import bapps_build.stats
    import generators.bank
    import judgments.catalog
    import judgments.ingest
    import judgments.readers
    import judgments.store
    import judgments.tasks

    for cls in (bapps_build.jobs.BuildError, bapps_build.replay.ReplayError, bapps_build.shards.ShardError,
                bapps_build.sources.SourceError, bapps_build.sources.UnusableSource, bapps_build.stats.StatsError,
                generators.bank.BankError, judgments.catalog.CatalogError, judgments.ingest.IngestError,
                judgments.readers.ResultsError, judgments.store.StoreError, judgments.tasks.TasksError,
                distortions.UnknownFamilyError, distortions.ChainSpecError, distortions.PluginError, SubsetError):
        assert issubclass(cls, UserError), cls
    assert issubclass(distortions.UnknownFamilyError, KeyError)  # callers catching the old bases still do
    assert not is_user_error(KeyError("p0")) and not is_user_error(RuntimeError("x"))
    assert is_user_error(FileNotFoundError("x"))


PLUGIN = textwrap.dedent('''
    from distortions import ChainSpecError, Family, register

    def sample(rng, severity):
        return {"k": 1}

    def apply(image, params):
        raise RAISED

    register(Family("boom", "photometric", sample, apply, {"k": "nothing"}, "always fails"))
''')


@pytest.mark.parametrize("raised,is_bug", [('ValueError("plugin boom")', True),
                                           ('ChainSpecError("plugin boom")', False)])
def test_a_worker_failure_shows_the_worker_traceback_only_for_a_bug(tmp_path, monkeypatch, raised, is_bug):
    from distortions import registry

    registry.family_names()
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_loaded_plugin_files", {})
    monkeypatch.delenv("BAPPS_BUILD_TRACEBACK", raising=False)
    plugin = tmp_path / "boom.py"
    plugin.write_text(PLUGIN.replace("RAISED", raised))
    res = CliRunner().invoke(main, ["distort", "--n", "3", "--out", str(tmp_path / "d"), "--workers", "1", "--quiet",
                                    "--plugin", str(plugin), "--families", "boom"], catch_exceptions=False)
    assert res.exit_code == 1
    assert "Error: the build stopped: at example 0" in res.output and "plugin boom" in res.output, res.output
    assert ("In the worker" in res.output and f"raise {raised}" in res.output) == is_bug, res.output


def test_a_work_error_carries_whether_it_is_a_bug_across_processes():
    for cause, bug in ((KeyError("p0"), True), (ConfigError("--n must be positive"), False)):
        try:
            raise cause
        except Exception as exc:
            err = WorkError("example 3", exc)
        err = pickle.loads(pickle.dumps(WorkError("chunk 0", err)))
        assert err.user_error is not bug and err.kind == type(cause).__name__
        try:
            raise ValueError("the build stopped") from err
        except ValueError as outer:
            assert bool(worker_bug(outer)) is bug
