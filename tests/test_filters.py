"""Filter stages on data with known answers, and the pipeline's filter chain."""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest

from factory.cli import main
from factory.core.record import Record
from filters.dedup.exact import ExactDedup
from filters.heuristics.heuristics import Heuristics
from filters.dedup.minhash import MinHashDedup
from filters.dedup.minhash_signing import normalise
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.records import WORDS, clustered_texts, doc, rec


def shingles(text: str, n: int = 5) -> set:
    w = normalise(text).split()
    return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_minhash_finds_planted_near_duplicates_and_drops_nothing_unlike():
    rng = random.Random(7)
    texts = [" ".join(doc(rng)) for _ in range(400)]
    planted = []
    for base in range(0, 400, 2):  # edits of several strengths
        words = texts[base].split()
        for _ in range(rng.choice([0, 1, 2, 4, 8, 16])):
            words[rng.randrange(len(words))] = rng.choice(WORDS) + "x"
        planted.append((base, len(texts)))
        texts.append(" ".join(words))
    records = [rec(i, t) for i, t in enumerate(texts)]
    rejected = []
    stage = MinHashDedup()
    stage.bind(rejected.append)
    kept = {r.id for r in stage(records)}
    dropped = {r.id: r.metadata["duplicate_of"] for r in rejected}

    high = [(a, b) for a, b in planted if jaccard(texts[a], texts[b]) >= 0.85]
    found = sum(f"r{b}" in dropped for a, b in high)
    assert len(high) > 50 and found / len(high) >= 0.95
    for r in rejected:  # every drop names a kept record it really resembles
        assert r.metadata["duplicate_of"] in kept
        similarity = jaccard(texts[int(r.id[1:])], texts[int(r.metadata["duplicate_of"][1:])])
        assert similarity >= 0.5, (r.id, similarity)
    assert stage.seen == len(records) and stage.kept + sum(stage.dropped.values()) == len(records)


class _Signature:
    """What datasketch's MinHashLSH reads from a MinHash: its hash values and their count."""

    def __init__(self, hashvalues):
        self.hashvalues = hashvalues

    def __len__(self):
        return len(self.hashvalues)


def reference_walk(sigs, threshold: float, order) -> dict[int, int]:
    """The rule as datasketch's MinHashLSH runs it one record at a time: query the kept
    records, drop on enough agreeing slots naming the most agreeing (earliest on a tie),
    else insert. Returns dropped index -> the index it names."""
    import numpy as np
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=sigs.shape[1], weights=(0.05, 0.95))
    need = int(np.ceil(threshold * sigs.shape[1] - 1e-9))
    dropped = {}
    for i in order:
        candidates = sorted(lsh.query(_Signature(sigs[i])))
        agree = [int((sigs[j] == sigs[i]).sum()) for j in candidates]
        if agree and max(agree) >= need:
            dropped[i] = candidates[agree.index(max(agree))]
        else:
            lsh.insert(i, _Signature(sigs[i]))
    return dropped


@pytest.mark.parametrize("threshold,seed", [(0.8, 3), (0.5, 4), (0.95, 5)])
def test_minhash_decisions_equal_datasketchs_index_walked_one_record_at_a_time(threshold, seed):
    """The stage decides in whole-array passes; every drop and every named record must be
    what datasketch's own LSH index gives when filled and queried record by record."""
    from filters.base import TextConfig
    from filters.dedup.minhash_signing import signatures

    texts = clustered_texts(seed, 60)
    records = [rec(i, t) for i, t in enumerate(texts)]
    rejected = []
    stage = MinHashDedup(MinHashDedup.Config(threshold=threshold))
    stage.bind(rejected.append)
    kept = [r.id for r in stage(records)]
    expected = reference_walk(signatures([TextConfig().text(r) for r in records]), threshold, range(len(records)))
    assert 50 < len(expected) < len(records) - 60
    assert kept == [r.id for i, r in enumerate(records) if i not in expected]
    assert {r.id: r.metadata["duplicate_of"] for r in rejected} == {f"r{i}": f"r{j}" for i, j in expected.items()}


def test_lsh_bands_are_the_ones_datasketch_would_choose():
    from datasketch.lsh import _optimal_param

    from filters.dedup.minhash_decide import lsh_params

    for num_perm in (16, 64, 128, 256):
        for threshold in (0.05, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0):
            assert lsh_params(threshold, num_perm, 0.05, 0.95) == _optimal_param(threshold, num_perm, 0.05, 0.95)


def test_minhash_keeps_the_best_scored_copy_when_scores_exist():
    text = " ".join(doc(random.Random(1)))
    records = [rec(0, text, judge_score=3), rec(1, text + " end", judge_score=9), rec(2, text, judge_score=5)]
    stage = MinHashDedup(MinHashDedup.Config(keep="best_score"))
    assert [r.id for r in stage(records)] == ["r1"]


def test_exact_dedup_folds_case_space_and_punctuation():
    records = [rec(0, "Tides rise twice a day."), rec(1, "tides   RISE twice a day"), rec(2, "Tides fall.")]
    rejected = []
    stage = ExactDedup()
    stage.bind(rejected.append)
    assert [r.id for r in stage(records)] == ["r0", "r2"]
    assert rejected[0].metadata["duplicate_of"] == "r0" and rejected[0].stage == "exact_dedup"



def test_exact_dedup_holds_a_few_numbers_per_record_not_the_records():
    # Issue 25: the stage held every record (about 3 KB each) to decide in one pass. It
    # streams them to disk now; a record held again would cost ~2 KB here.
    def peak(n: int) -> int:
        records = (Record(f"r{i}", [{"role": "user", "content": f"question {i % (n // 2)} " + "x" * 500},
                                    {"role": "assistant", "content": "an answer " * 80}], {"task": "qa", "i": i})
                   for i in range(n))
        tracemalloc.start()
        try:
            assert sum(1 for _ in ExactDedup()(records)) == n // 2
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert (peak(6000) - peak(2000)) / 4000 < 500
@pytest.mark.parametrize("config,messages,meta,reason", [
    ({"min_chars": {"assistant": 10}}, [("user", "Q?"), ("assistant", "short")], {}, "too_short"),
    ({"max_chars": {"user": 3}}, [("user", "Too long?"), ("assistant", "fine answer")], {}, "too_long"),
    ({"refusals": True}, [("user", "Q?"), ("assistant", "As an AI language model, I cannot.")], {}, "refusal"),
    ({"refusals": ["consult a vet"]}, [("user", "Q?"), ("assistant", "Please consult a vet.")], {}, "refusal"),
    ({"drop_truncated": True}, [("user", "Q?"), ("assistant", "It is")], {"finish_reason": "length"}, "truncated"),
    ({"alternating_roles": True}, [("user", "Q?"), ("user", "Again?")], {}, "roles_not_alternating"),
    ({"alternating_roles": True}, [("system", "s"), ("user", "Q?"), ("assistant", "A"), ("assistant", "B")], {},
     "roles_not_alternating"),
])
def test_heuristics_drop_what_they_should(config, messages, meta, reason):
    stage = Heuristics(Heuristics.Config(**config))
    record = Record("x", [{"role": r, "content": c} for r, c in messages], meta)
    assert list(stage([record])) == [] and dict(stage.dropped) == {reason: 1}


def test_heuristics_keep_good_records_and_unlisted_checks_are_off():
    good = Record("g", [{"role": "system", "content": "s"}, {"role": "user", "content": "How deep is it?"},
                        {"role": "assistant", "content": "About forty metres at high tide."}], {"finish_reason": "stop"})
    strict = Heuristics(Heuristics.Config(min_chars={"assistant": 10}, refusals=True, drop_truncated=True,
                                          alternating_roles=True))
    assert list(strict([good])) == [good]
    lax = Heuristics()
    odd = Record("o", [{"role": "assistant", "content": "As an AI language model"}], {"finish_reason": "length"})
    assert list(lax([odd])) == [odd]


def test_pipeline_filter_chain_funnel_adds_up(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=40, generate__pairs_per_request=2,
                          generate__combine="product",  # 8 combinations for 20 requests: repeats
                          filters=[{"type": "heuristics", "min_chars": {"assistant": 60}},
                                   {"type": "exact_dedup"}, {"type": "minhash_dedup", "threshold": 0.7}])
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    stages = info["funnel"]["stages"]
    assert [s["stage"] for s in stages] == ["generate", "heuristics", "exact_dedup", "minhash_dedup"]
    for before, after in zip(stages, stages[1:]):
        assert after["seen"] == before["kept"]
        assert after["kept"] + sum(after["dropped"].values()) == after["seen"]
    rejected = read_jsonl(out / "rejected.jsonl")
    kept = read_jsonl(out / "data.jsonl")
    assert len(kept) + len(rejected) == 40 == info["funnel"]["kept"] + info["funnel"]["rejected"]
    assert {r["stage"] for r in rejected} <= {"generate", "heuristics", "exact_dedup", "minhash_dedup"}
    assert "| heuristics |" in (out / "README.md").read_text()


def test_bad_filter_config_is_one_line_exit_2(tmp_path, loopback, capsys):
    path = write_pipeline(tmp_path, loopback(), filters=[{"type": "minhash_dedup", "treshold": 0.9}])
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "filters[0].treshold: unknown key" in err[0]


def test_short_and_empty_documents_get_signatures_of_their_own():
    from filters.dedup.minhash_signing import signatures

    s = signatures(["a b", "", "a b", "one two three four five six", "One, two three four five six!", "x y z", ""])
    assert (s[0] == s[2]).all() and (s[3] == s[4]).all() and (s[1] == s[6]).all()
    assert (s[0] == s[1]).mean() < 0.1 and (s[0] == s[5]).mean() < 0.1 and (s[1] == s[5]).mean() < 0.1
    # A dataset with fewer words in all than a shingle has.
    tiny = [Record(f"t{i}", [{"role": "user", "content": text}]) for i, text in enumerate(["hi", "yo", "Hi!"])]
    assert [r.id for r in MinHashDedup()(tiny)] == ["t0", "t1"]


def test_signatures_see_the_words_normalise_sees_in_any_script():
    from filters.dedup.minhash_signing import signatures, word_hashes

    texts = ["Straße, CAFÉ — naïve_coöperation!", "ΟΔΟΣ και Οδός… İstanbul’da", "東京都 の 天気は？ 晴れ。",
             "Ünïcode\u00a0spaces\u2003and\ttabs", "emoji 🙂 between words", "a\0b", "", "...", "x"]
    _, counts = word_hashes(texts)
    assert counts.tolist() == [len(normalise(t).split()) for t in texts]
    assert (signatures(texts) == signatures([normalise(t) for t in texts])).all()


def test_signatures_do_not_depend_on_how_documents_are_batched():
    from filters.dedup.minhash_signing import signatures

    rng = random.Random(5)
    texts = [" ".join(doc(rng, rng.choice([0, 3, 30, 400]))) for _ in range(60)]
    alone = signatures(texts, batch=1)
    assert (signatures(texts) == alone).all()
    assert (signatures(texts, batch=7, batch_chars=2000) == alone).all()  # some documents exceed the budget alone


def test_signature_agreement_estimates_jaccard_without_bias_at_every_length():
    """One-permutation MinHash: short documents leave most bins empty, so densification
    fills them; the estimate must still track the exact Jaccard of the shingle sets."""
    from filters.dedup.minhash_signing import signatures

    rng = random.Random(11)
    pairs = []
    for length in (12, 40, 90, 600):  # fewer shingles than bins, and many more
        for edits in (0, 1, 2, 4, 8, 16, 32):
            for _ in range(6):
                words = doc(rng, length)
                copy = list(words)
                for _ in range(min(edits, length // 2)):
                    copy[rng.randrange(length)] = "edit" + str(rng.randint(0, 9))
                pairs.append((" ".join(words), " ".join(copy)))
    sigs = signatures([t for pair in pairs for t in pair])
    estimates = (sigs[0::2] == sigs[1::2]).mean(axis=1)
    exact = [jaccard(a, b) for a, b in pairs]
    errors = [e - j for e, j in zip(estimates, exact)]
    assert abs(sum(errors) / len(errors)) < 0.015
    assert max(map(abs, errors)) < 0.2
    assert sum(j < 0.5 for j in exact) > 20 and sum(j > 0.85 for j in exact) > 20


LANGUAGE_SAMPLES = [
    ("en", "How do I keep my bees alive through a cold winter?", "Leave them enough honey and reduce the entrance."),
    ("de", "Wie halte ich meine Bienen durch einen kalten Winter am Leben?",
     "Lassen Sie ihnen genug Honig und verkleinern Sie das Flugloch."),
    ("fr", "Comment garder mes abeilles en vie pendant un hiver froid ?",
     "Laissez-leur assez de miel et réduisez l'entrée de la ruche."),
    ("es", "¿Cómo mantengo vivas a mis abejas durante un invierno frío?",
     "Déjeles suficiente miel y reduzca la entrada de la colmena."),
]


def test_language_check_keeps_only_the_listed_languages():
    records = [Record(lang, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
               for lang, q, a in LANGUAGE_SAMPLES]
    stage = Heuristics(Heuristics.Config(languages=["en", "fr"]))
    rejected = []
    stage.bind(rejected.append)
    assert [r.id for r in stage(records)] == ["en", "fr"]
    assert {r.id: r.reason for r in rejected} == {"de": "wrong_language", "es": "wrong_language"}
    assert "detected de" in next(r.detail for r in rejected if r.id == "de")


def test_token_bounds_count_with_the_given_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from tests.helpers.tiny_models import build_tiny_chat_model

    folder = build_tiny_chat_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    answer = "tides volcanoes glaciers coral reefs " * 3
    n = len(tok.encode(answer, add_special_tokens=False))
    record = Record("t", [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}])
    assert list(Heuristics(Heuristics.Config(max_tokens={"assistant": n}, tokenizer=str(folder)))([record]))
    stage = Heuristics(Heuristics.Config(max_tokens={"assistant": n - 1}, tokenizer=str(folder)))
    assert list(stage([record])) == [] and dict(stage.dropped) == {"too_long": 1}
    stage = Heuristics(Heuristics.Config(min_tokens={"assistant": n + 1}, tokenizer=str(folder)))
    assert list(stage([record])) == [] and dict(stage.dropped) == {"too_short": 1}
