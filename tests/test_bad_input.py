"""A user's mistake: one line naming the file and the problem, exit code 2, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from factory.cli import main
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli


def _edit(key_path: str, value):
    def change(folder: Path, path: Path) -> None:
        data = yaml.safe_load(path.read_text())
        node = data
        *parents, last = key_path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        path.write_text(yaml.safe_dump(data))
    return change


_DELETE = object()


def _write(relative: str, content: str | bytes):
    def change(folder: Path, path: Path) -> None:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.write_bytes if isinstance(content, bytes) else target.write_text)(content)
    return change


def _folder_instead(relative: str):
    def change(folder: Path, path: Path) -> None:
        target = folder / relative
        target.unlink()
        target.mkdir()
    return change


# (case id, change to the good pipeline, extra CLI args, words the one line must contain)
CASES = [
    ("unknown-top-key", _edit("colour", "blue"), [], ["pipeline.yaml", "colour", "unknown key"]),
    ("unknown-teacher-key", _edit("teacher.temprature", 0.5), [], ["teacher.temprature", "unknown key"]),
    ("wrong-type", _edit("generate.count", "many"), [], ["generate.count", "integer"]),
    ("count-zero", _edit("generate.count", 0), [], ["generate.count", "greater than 0"]),
    ("count-negative", _edit("generate.count", -5), [], ["generate.count", "greater than 0"]),
    ("missing-name", _edit("name", _DELETE), [], ["name", "required"]),
    ("bad-backend", _edit("teacher.backend", "carrier-pigeon"), [], ["teacher.backend"]),
    ("unknown-task", _edit("generate.task", "poetry"), [], ["generate", "task must be one of"]),
    ("bad-temperature", _edit("teacher.sampling.temperature", 7), [], ["teacher.sampling.temperature"]),
    ("key-pasted-as-env-name", _edit("teacher.api_key_env", "sk-abc123!@#"), [], ["teacher.api_key_env", "name of an environment variable"]),
    ("malformed-yaml", _write("pipeline.yaml", "name: [unclosed\n"), [], ["pipeline.yaml", "malformed YAML"]),
    ("empty-pipeline", _write("pipeline.yaml", ""), [], ["pipeline.yaml", "empty"]),
    ("pipeline-is-a-list", _write("pipeline.yaml", "- a\n- b\n"), [], ["pipeline.yaml", "mapping"]),
    ("missing-template", _edit("generate.templates", {"user": "qa/nope.j2"}), [], ["qa/nope.j2", "not found"]),
    ("undefined-variables", _write("prompts/qa/user.j2", "About {{ topic }} for {{ audience }} in {{ year }}."), [],
     ["user.j2", "audience", "year"]),
    ("template-syntax", _write("prompts/qa/user.j2", "About {{ topic "), [], ["user.j2", "syntax"]),
    ("template-attribute", _write("prompts/qa/user.j2", "About {{ topic.title.missing }}"), [], ["user.j2"]),
    ("empty-seed-file", _write("topics.txt", "\n\n"), [], ["topics.txt", "no values"]),
    ("missing-seed-file", _edit("seeds.topic", {"file": "nowhere.txt"}), [], ["nowhere.txt", "not found"]),
    ("seed-file-not-utf8", _write("topics.txt", b"tides\n\xff\xfe volcanoes\n"), [], ["topics.txt", "not UTF-8"]),
    ("seed-file-is-a-folder", _folder_instead("topics.txt"), [], ["topics.txt", "folder"]),
    ("bad-jsonl-seed", _edit("seeds.topic", {"file": "t.jsonl"}), [], ["t.jsonl:2", "invalid JSON"]),
    ("seed-field-missing", _edit("seeds.topic", {"file": "t.csv", "field": "subject"}), [], ["t.csv", "subject"]),
    ("seed-wrong-suffix", _edit("seeds.topic", {"file": "topics.xlsx"}), [], ["topics.xlsx", "unsupported"]),
    ("empty-inline-seed", _edit("seeds.persona", []), [], ["seeds.persona", "empty"]),
    ("seed-scalar", _edit("seeds.persona", "a student"), [], ["seeds.persona", "list of values"]),
    ("bad-set-syntax", None, ["--set", "teacher.model"], ["--set", "KEY=VALUE"]),
    ("bad-set-yaml", None, ["--set", "generate.count=[1,"], ["--set", "not valid YAML"]),
    ("set-into-scalar", None, ["--set", "name.first=x"], ["--set", "name"]),
    ("set-count-zero", None, ["--set", "generate.count=0"], ["generate.count"]),
    ("missing-api-key", _edit("teacher.api_key_env", "FACTORY_TEST_UNSET_KEY"), [], ["FACTORY_TEST_UNSET_KEY", "not set"]),
    ("unknown-filter", _edit("filters", [{"type": "sparkle"}]), [], ["filters[0].type", "sparkle"]),
    ("judge-unknown-key", _edit("filters", [{"type": "judge", "min_scor": 5}]), [], ["filters[0].min_scor", "unknown key"]),
    ("judge-scale-inverted", _edit("filters", [{"type": "judge", "scale": [10, 1]}]), [], ["filters[0]", "scale"]),
    ("judge-min-score-off-scale", _edit("filters", [{"type": "judge", "min_score": 11}]), [], ["filters[0]", "min_score 11"]),
    ("judge-missing-rubric", _edit("filters", [{"type": "judge", "rubric": "judge/nope.j2"}]), [],
     ["filters[0].rubric", "judge/nope.j2", "not found"]),
    ("judge-rubric-variable", _write("prompts/judge/mine.j2", "Grade {{ answer }} by {{ criteria }}"), [
        "--set", "filters=[{type: judge, rubric: judge/mine.j2}]"], ["mine.j2", "criteria"]),
    ("judge-teacher-key", _edit("filters", [{"type": "judge", "teacher": {"modle": "x"}}]), [],
     ["filters[0].teacher.modle", "unknown key"]),
    ("judge-api-key-unset", _edit("filters", [{"type": "judge", "teacher": {"api_key_env": "FACTORY_TEST_UNSET_KEY"}}]),
     [], ["filters[0].teacher.api_key_env", "FACTORY_TEST_UNSET_KEY", "not set"]),
    ("diversity-kcenter-no-budget", _edit("filters", [{"type": "diversity", "method": "kcenter"}]), [],
     ["filters[0]", "needs a budget"]),
    ("diversity-fraction-over-one", _edit("filters", [{"type": "diversity", "budget": 1.5}]), [],
     ["filters[0]", "at most 1"]),
    ("judge-openai-without-address", _edit("filters", [{"type": "judge", "teacher": {"base_url": None}}]), [],
     ["filters[0].teacher", "base_url"]),
    ("missing-pipeline-file", _write("elsewhere.txt", ""), ["--MISSING"], ["pipeline file not found"]),
]

_DOCUMENT = "Orbit Notes keeps every note in sync across desktop, web and phone; conflicts keep both copies.\n" * 3
_DIALOGUE = ["--set", "generate={task: dialogue, count: 2, system_prompt: Be kind.}", "--set", "seeds.goal=[a refund]"]
_DIALOGUE_SEEDS = [*_DIALOGUE, "--set", "seeds={persona: [a student], goal: [a refund]}"]

# Typos that would change the data without a word (a dedup comparing empty texts keeps one
# record of all; a seed nobody reads never varies a prompt): each is caught before a request.
TYPOS = [
    ("filter-role", _edit("filters", [{"type": "exact_dedup", "roles": ["asistant"]}]), [],
     ["pipeline.yaml", "filters[0].roles", "'asistant' is not a role the qa task writes", "(roles: assistant, user)"]),
    ("minhash-role", _edit("filters", [{"type": "exact_dedup"}, {"type": "minhash_dedup", "roles": ["users"]}]), [],
     ["filters[1].roles", "'users'"]),
    ("diversity-role", _edit("filters", [{"type": "diversity", "roles": ["Assistant"]}]), [],
     ["filters[0].roles", "'Assistant'"]),
    ("system-role-not-written", _edit("filters", [{"type": "exact_dedup", "roles": ["system"]}]), [],
     ["filters[0].roles", "'system' is not a role"]),
    ("filter-field", _edit("filters", [{"type": "exact_dedup", "fields": ["finish_reasn"]}]), [],
     ["filters[0].fields", "'finish_reasn' is not a metadata field the qa task writes", "finish_reason"]),
    ("filter-seed-field", _edit("filters", [{"type": "minhash_dedup", "fields": ["seed.topc"]}]), [],
     ["filters[0].fields", "'seed.topc'", "seed.persona, seed.topic"]),
    ("field-of-another-task", _edit("filters", [{"type": "exact_dedup", "fields": ["quote"]}]), [],
     ["filters[0].fields", "'quote'"]),
    ("field-before-the-judge-adds-it", _edit("filters", [{"type": "exact_dedup", "fields": ["judge_score"]},
                                                         {"type": "judge"}]), [],
     ["filters[0].fields", "'judge_score' is added by judge, which runs after this stage"]),
    ("heuristics-min-chars-role", _edit("filters", [{"type": "heuristics", "min_chars": {"asistant": 40}}]), [],
     ["filters[0].min_chars", "'asistant' is not a role"]),
    ("heuristics-max-tokens-role", _edit("filters", [{"type": "heuristics", "max_tokens": {"assistent": 400},
                                                      "tokenizer": "unused"}]), [],
     ["filters[0].max_tokens", "'assistent'"]),
    ("heuristics-language", _edit("filters", [{"type": "heuristics", "languages": ["eng"]}]), [],
     ["filters[0].languages", "'eng'"]),
    ("unused-seed", _edit("seeds.audience", ["experts"]), [],
     ["pipeline.yaml", "seeds.audience: not used by any template", "(templates: qa/system.j2, qa/user.j2)"]),
    ("seed-the-task-sets", _edit("seeds.k", [5]), [], ["seeds.k", "sets 'k' itself"]),
    ("dialogue-unused-seed", None, _DIALOGUE, ["seeds.topic: not used by any template", "dialogue/user_system.j2"]),
    ("dialogue-field", None, [*_DIALOGUE_SEEDS, "--set",
                              "filters=[{type: exact_dedup, fields: [teacher_models.asistant]}]"],
     ["filters[0].fields", "'teacher_models.asistant'", "teacher_models.assistant, teacher_models.user"]),
    ("dialogue-system-not-saved", None, [*_DIALOGUE_SEEDS, "--set", "generate.save_system=false",
                                         "--set", "filters=[{type: heuristics, min_chars: {system: 5}}]"],
     ["filters[0].min_chars", "'system' is not a role the dialogue task writes"]),
    ("dialogue-teacher-role", None, [*_DIALOGUE_SEEDS, "--set",
                                     "generate.teachers={asistant: {model: x}}"], ["generate.teachers", "asistant"]),
    ("grounded-field", _write("docs/notes.txt", _DOCUMENT),
     ["--set", "generate={task: grounded_qa, documents: docs}", "--set", "seeds={persona: [a student]}",
      "--set", "filters=[{type: exact_dedup, fields: [source.doc]}]"],
     ["filters[0].fields", "'source.doc'", "source.chunk_id", "source.document"]),
]
CASES += TYPOS


@pytest.mark.parametrize("change,args,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, loopback, capsys, change, args, words):
    url = loopback()
    path = write_pipeline(tmp_path, url)
    (tmp_path / "t.jsonl").write_text('{"topic": "a"}\n{"topic": \n')
    (tmp_path / "t.csv").write_text("topic,level\ntides,1\n")
    if change is not None:
        change(tmp_path, path)
    target = str(tmp_path / "no-such.yaml") if "--MISSING" in args else str(path)
    args = [a for a in args if a != "--MISSING"]
    code = main(["run", target, "--quiet", *args])
    assert_user_error(code, capsys.readouterr().err, words)
    assert sum(loopback.teacher.received.values()) == 0
    assert not (tmp_path / "out").exists()


def test_bad_input_from_the_real_command(tmp_path):
    path = write_pipeline(tmp_path)
    (tmp_path / "prompts" / "qa" / "user.j2").write_text("{{ nobody_sets_this }}")
    for verb in ("run", "validate"):
        done = factory_cli(verb, str(path))
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "nobody_sets_this" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("change,args,words", [c[1:] for c in TYPOS], ids=[c[0] for c in TYPOS])
def test_validate_reports_each_typo(tmp_path, loopback, capsys, change, args, words):
    path = write_pipeline(tmp_path, loopback())
    if change is not None:
        change(tmp_path, path)
    code = main(["validate", str(path), *args])
    assert_user_error(code, capsys.readouterr().err, words)
    assert sum(loopback.teacher.received.values()) == 0


@pytest.mark.parametrize("entry,words", [
    ({"type": "exact_dedup", "roles": ["asistant"]},
     ["filters[0].roles", "'asistant' is not a role any input record has", "(roles: assistant, user)"]),
    ({"type": "heuristics", "min_chars": {"system": 5}}, ["filters[0].min_chars", "'system'"]),
    ({"type": "minhash_dedup", "fields": ["seed.topc"]}, ["filters[0].fields", "'seed.topc'", "seed.topic"]),
], ids=["dedup-role", "heuristics-role", "nested-field"])
def test_filter_command_checks_roles_and_fields_against_its_input(tmp_path, capsys, entry, words):
    path = write_pipeline(tmp_path, filters=[entry])
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "An answer."}],
             "metadata": {"seed": {"topic": "tides"}}} for i in range(3)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["filter", str(path), "--input", str(source), "--out", str(tmp_path / "filtered"), "--quiet"])
    assert_user_error(code, capsys.readouterr().err, words)
    assert not (tmp_path / "filtered").exists()


@pytest.mark.parametrize("place", ["below a file", "in /proc"])
def test_init_into_a_place_it_cannot_write_is_one_line(tmp_path, place):
    (tmp_path / "notes.txt").write_text("mine")
    target = tmp_path / "notes.txt" / "mine" if place == "below a file" else Path("/proc/factory-init-test")
    made = factory_cli("init", "qa", str(target))
    assert_user_error(made.returncode, made.stderr, ["factory init", str(target), "cannot write"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_init_outside_the_current_folder_says_where_it_wrote(tmp_path):
    """`factory init qa ../../x` is honoured (the user typed it) but the line names the
    folder in full, so a path that climbs out of the current folder is not a surprise."""
    import subprocess
    import sys

    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    made = subprocess.run([sys.executable, "-m", "factory", "init", "qa", "../../x"], cwd=here,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "x" / "pipeline.yaml").is_file()
    first = made.stdout.splitlines()[0]
    assert f"wrote {tmp_path / 'x'}/" in first and "outside the current folder" in first, made.stdout
    inside = subprocess.run([sys.executable, "-m", "factory", "init", "qa", "mine"], cwd=here,
                            capture_output=True, text=True, timeout=120)
    assert inside.returncode == 0 and inside.stdout.startswith("wrote mine/:"), inside.stdout


def test_a_damaged_store_is_one_line(tmp_path, loopback):
    """SQLite's integrity report spans lines ('*** in database main ***' then the page):
    the refusal stays one line, naming the store and `factory salvage`."""
    import sqlite3

    path = write_pipeline(tmp_path, loopback())
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    store = tmp_path / "out" / "run.sqlite"
    db = sqlite3.connect(str(store))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(store, "r+b") as f:
        f.seek(page_size)  # the second page's b-tree header: a page type that does not exist
        f.write(b"\x07\xff\xff")
    broken = factory_cli("run", str(path), "--quiet")
    assert broken.returncode != 0 and "Traceback" not in broken.stderr, broken.stderr
    lines = broken.stderr.strip().splitlines()
    assert len(lines) == 1 and "factory salvage" in lines[0] and str(store) in lines[0], broken.stderr
