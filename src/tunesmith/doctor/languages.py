"""Which languages the texts are in, which are rare, and how well the model's vocabulary covers each.

Language identification uses py3langid (a numpy port of langid.py, 4.6 MB, about 0.3 s for 5,000
SMS) restricted to :data:`LANGUAGES` and to confident answers: short, slangy texts are where
identifiers guess, and a guess would show up as a phantom minority language. Without py3langid the
check falls back to writing systems (Han, Hangul, Cyrillic, ...), which still catches a second script
and its vocabulary gaps, and says how to install the identifier.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tunesmith.doctor.findings import MAX_EXAMPLES, Finding

if TYPE_CHECKING:
    from tunesmith.doctor.dataset import DoctorData

LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "cs", "ro", "hu", "fi", "tr", "ru", "uk", "el", "he", "ar", "fa",
    "hi", "bn", "th", "vi", "id", "zh", "ja", "ko",
)  # fmt: skip
"""Languages the identifier chooses among: widely used ones, each with its own vocabulary needs."""
MIN_CONFIDENCE = 0.9
"""Normalised identifier probability below which a text's language counts as unknown."""
MIN_BYTES = 12
"""Texts shorter than this in UTF-8 (stripped; 4 Chinese characters, 12 Latin letters) are too short to identify."""
MINORITY_SHARE = 0.05
MIN_REPORTED_SHARE = 0.01
"""Languages under this share (or under :data:`MIN_REPORTED_ROWS` rows) are listed in the evidence only: misidentifications."""
MIN_REPORTED_ROWS = 3
UNK_WARNING = 0.05
"""Share of [UNK] tokens from which a language counts as not covered by the vocabulary."""
FRAGMENTATION = 0.5
"""A language whose bytes per token fall under this share of the main language's is split into fragments."""
INSTALL = "pip install 'py3langid>=0.3,<0.5'"

_identifier: Any = None

# (first code point, last code point, script); checked in order, first match wins.
_SCRIPTS: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "Latn"),
    (0x0370, 0x03FF, "Grek"),
    (0x0400, 0x052F, "Cyrl"),
    (0x0590, 0x05FF, "Hebr"),
    (0x0600, 0x06FF, "Arab"),
    (0x0900, 0x097F, "Deva"),
    (0x0980, 0x09FF, "Beng"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x1100, 0x11FF, "ko"),
    (0x3040, 0x30FF, "ja"),
    (0x3400, 0x4DBF, "zh"),
    (0x4E00, 0x9FFF, "zh"),
    (0xAC00, 0xD7AF, "ko"),
)


def _load_identifier() -> Any:
    global _identifier
    if _identifier is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        # 0.4 renamed the loader (and changed the model file format) of 0.3
        load = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
        identifier = load(MODEL_FILE, norm_probs=True)
        identifier.set_languages(list(LANGUAGES))
        _identifier = identifier
    return _identifier


def detect_languages(texts: Sequence[str]) -> tuple[list[str | None], str]:
    """Each text's language code (None when too short or unsure) and the method used.

    Returns:
        ``(codes, method)``: ISO 639-1 codes from py3langid (``method`` "py3langid"), or, when it is
        not installed, writing systems (``zh``, ``ja``, ``ko`` or an ISO 15924 script such as ``Latn``,
        ``Cyrl``; ``method`` "script").
    """
    try:
        identifier = _load_identifier()
    except (ImportError, AttributeError, OSError):  # missing, or a release with another API
        return [script_of(t) for t in texts], "script"
    codes: list[str | None] = []
    for text in texts:
        stripped = text.strip()
        if len(stripped.encode("utf-8")) < MIN_BYTES:
            codes.append(None)
            continue
        code, probability = identifier.classify(stripped)
        codes.append(code if probability >= MIN_CONFIDENCE else None)
    return codes, "py3langid"


def script_of(text: str) -> str | None:
    """The writing system most letters of ``text`` are in (CJK scripts named by language), or None."""
    counts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        point = ord(char)
        for first, last, script in _SCRIPTS:
            if first <= point <= last:
                counts[script] += 1
                break
    if not counts:
        return None
    if counts["ja"] and counts["zh"]:  # kanji among kana is Japanese
        counts["ja"] += counts.pop("zh")
    return counts.most_common(1)[0][0]


def check_languages(data: DoctorData) -> list[Finding]:
    """Language shares, rare languages, and the model vocabulary's coverage of each language."""
    codes, method = detect_languages(data.train.texts)
    total = len(codes)
    counts = Counter(code for code in codes if code is not None)
    unknown = total - sum(counts.values())
    data.summary["languages"] = {
        "method": method,
        "shares": {code: round(n / total, 4) for code, n in counts.most_common()},
        "unknown": unknown,
    }
    findings = []
    if method == "script":
        findings.append(
            Finding(
                check="languages",
                severity="info",
                message="told languages apart by writing system only (Latin, Han, Cyrillic, ...): the language identifier "
                "py3langid could not be loaded, so languages that share a script are counted together",
                evidence={"scripts": dict(counts.most_common())},
                remedy=f"install the language identifier: {INSTALL}",
            )
        )
    if not counts:
        return findings
    main, main_count = counts.most_common(1)[0]
    reported = {code: n for code, n in counts.items() if n / total >= MIN_REPORTED_SHARE and n >= MIN_REPORTED_ROWS}
    minority = {code: n for code, n in reported.items() if n / total < MINORITY_SHARE}
    major = {code: n for code, n in reported.items() if n / total >= MINORITY_SHARE}
    shares = {code: f"{n / total:.1%}" for code, n in counts.most_common(MAX_EXAMPLES)}
    if minority:
        listed = ", ".join(f"{code} {n / total:.1%} ({n})" for code, n in sorted(minority.items(), key=lambda kv: -kv[1]))
        positions = [i for i, code in enumerate(codes) if code in minority]
        findings.append(
            Finding(
                check="languages",
                severity="warning",
                message=f"{len(minority)} language{'s' if len(minority) > 1 else ''} {'have' if len(minority) > 1 else 'has'} under "
                f"{MINORITY_SHARE:.0%} of the rows ({listed}) beside {main} {main_count / total:.0%}; "
                "the model sees too few of them to learn them well",
                evidence={
                    "shares": shares,
                    "unknown": unknown,
                    "method": method,
                    "examples": [data.example(i, language=codes[i]) for i in positions[:MAX_EXAMPLES]],
                },
                remedy=f"collect more {'/'.join(minority)} examples (or drop them if they do not belong), then compare the "
                "model's accuracy on them: tunesmith eval RUN --data FILE_OF_THOSE_ROWS",
            )
        )
    elif len(major) > 1:
        findings.append(
            Finding(
                check="languages",
                severity="info",
                message=f"the texts are in {len(major)} languages ({', '.join(f'{c} {n / total:.0%}' for c, n in major.items())}); "
                "score each language separately after training",
                evidence={"shares": shares, "unknown": unknown, "method": method},
                remedy="tunesmith eval RUN --data FILE_OF_ONE_LANGUAGE, for each language",
            )
        )
    findings += _coverage(data, codes, reported, main)
    return findings


def _coverage(data: DoctorData, codes: list[str | None], languages: dict[str, int], main: str) -> list[Finding]:
    tokenizer, _ = data.tokenizer
    if tokenizer is None or len(languages) < 1:
        return []
    special = set(tokenizer.all_special_ids)
    unk = tokenizer.unk_token_id
    tokens: dict[str, int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    size: dict[str, int] = defaultdict(int)
    for text, ids, code in zip(data.train.texts, data.token_ids, codes):
        if code not in languages:
            continue
        content = [t for t in ids if t not in special or t == unk]
        tokens[code] += len(content)
        unknown[code] += sum(1 for t in content if t == unk)
        size[code] += len(text.encode("utf-8"))
    stats = {
        code: {"unk_share": round(unknown[code] / tokens[code], 4), "bytes_per_token": round(size[code] / tokens[code], 2)}
        for code in languages
        if tokens[code]
    }
    data.summary["tokenizer_coverage"] = stats
    if main not in stats:
        return []
    findings = []
    uncovered = {code: s for code, s in stats.items() if s["unk_share"] >= UNK_WARNING}
    fragmented = {
        code: s
        for code, s in stats.items()
        if code not in uncovered and s["bytes_per_token"] < FRAGMENTATION * stats[main]["bytes_per_token"]
    }
    model = data.model
    remedy = data.train_command("--model", "MULTILINGUAL_MODEL_DIR") + "  (a local multilingual Hugging Face model directory)"
    if uncovered:
        listed = ", ".join(f"{code} ({s['unk_share']:.0%} [UNK])" for code, s in uncovered.items())
        findings.append(
            Finding(
                check="tokenizer_coverage",
                severity="warning",
                message=f"the vocabulary of model '{model}' does not cover {listed}: those words reach the model as "
                "unknown tokens; use a multilingual model",
                evidence={"per_language": stats},
                remedy=remedy,
            )
        )
    if fragmented:
        listed = ", ".join(f"{code} {s['bytes_per_token']} bytes/token" for code, s in fragmented.items())
        findings.append(
            Finding(
                check="tokenizer_coverage",
                severity="warning",
                message=f"model '{model}' splits {listed} into fragments (against {stats[main]['bytes_per_token']} for {main}): "
                "their words fall apart into characters and use up max_length",
                evidence={"per_language": stats},
                remedy=remedy,
            )
        )
    return findings
