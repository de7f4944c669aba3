"""Each example's language (from a column or identified), and temperature-based sampling across languages.

Temperature sampling (as in multilingual pre-training, e.g. XLM-R): language ``l`` with ``n_l``
examples is drawn with probability proportional to ``n_l ** (1 / T)``. ``T = 1`` keeps the natural
mix; a larger ``T`` flattens it towards uniform, so small languages are seen more often without
discarding the large ones. The epoch keeps its size; small languages are repeated, large ones thinned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.loading import read_table
from tunesmith.data.packaged import PACKAGED, packaged_path
from tunesmith.data.texts import LabelledTexts
from tunesmith.errors import UserError

UNKNOWN = "unknown"


def column_languages(texts: LabelledTexts, column: str, encoding: str = "utf-8") -> list[str]:
    """The value of ``column`` on each example's file row (examples keep their file line numbers)."""
    source = texts.source
    path = packaged_path(source) if source in PACKAGED and not Path(source).exists() else source
    table = read_table(path, encoding=encoding)
    match = next((c for c in table.columns if c == column or c.casefold() == column.casefold()), None)
    if match is None:
        raise UserError(
            f"{source}: no language column named '{column}'; columns found: {', '.join(table.columns)}; name it with --lang-col NAME"
        )
    by_line = {line: row[match] for line, row in zip(table.lines, table.rows, strict=True)}
    return [str(by_line.get(line) or UNKNOWN).strip() or UNKNOWN for line in texts.rows]


def identified_languages(texts: Sequence[str]) -> list[str]:
    """ISO 639-1 codes from the language identifier; ``unknown`` where it is not confident."""
    from tunesmith.doctor.languages import detect_languages

    codes, _ = detect_languages(list(texts))
    return [code or UNKNOWN for code in codes]


def temperature_resample(n_by_language: dict[str, int], temperature: float) -> dict[str, int]:
    """How many examples of each language an epoch of the same size draws at temperature ``T``."""
    if temperature < 1:
        raise UserError(f"`data.lang_temperature` must be >= 1 (1 keeps the natural mix), got {temperature}")
    total = sum(n_by_language.values())
    weights = {lang: n ** (1.0 / temperature) for lang, n in n_by_language.items()}
    norm = sum(weights.values())
    target = {lang: max(1, round(total * w / norm)) for lang, w in weights.items()}
    return target


def resample_by_language(
    texts: LabelledTexts, languages: list[str], temperature: float, seed: int
) -> tuple[LabelledTexts, list[str], dict[str, Any]]:
    """Resample the training examples so languages follow the temperature-scaled shares.

    Returns:
        The resampled examples, their languages, and a report of counts before and after.
    """
    rng = np.random.default_rng(seed)
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(languages):
        by_lang.setdefault(lang, []).append(i)
    target = temperature_resample({lang: len(idx) for lang, idx in by_lang.items()}, temperature)
    chosen: list[int] = []
    for lang, idx in sorted(by_lang.items()):
        want = target[lang]
        if want <= len(idx):
            picked = rng.choice(idx, size=want, replace=False)
        else:  # every example once, the rest drawn again
            picked = np.concatenate([idx, rng.choice(idx, size=want - len(idx), replace=True)])
        chosen.extend(int(i) for i in picked)
    chosen.sort()
    report = {"temperature": temperature, "before": dict(Counter(languages)), "after": target}
    return texts.subset(chosen), [languages[i] for i in chosen], report


def attach_languages(data, config) -> None:
    """Give ``data`` (PreparedData) each example's language when the config asks, and resample by temperature.

    Languages come from ``data.lang_col`` or the identifier (``data.detect_language``); with
    ``data.lang_temperature`` the training split is resampled across languages (eval never is).
    """
    d = config.data
    if d.lang_temperature is not None and not (d.lang_col or d.detect_language):
        raise UserError("--lang-temperature needs the texts' languages: name a language column with --lang-col, or pass --detect-language")
    if not (d.lang_col or d.detect_language):
        return
    if d.lang_temperature is not None and getattr(d, "balance", "none") != "none":
        raise UserError("--lang-temperature and --balance both resample the training split; choose one")
    langs = {}
    for split, texts in (("train", data.train), ("eval", data.eval)):
        langs[split] = column_languages(texts, d.lang_col, d.encoding) if d.lang_col else identified_languages(texts.texts)
    data.report["languages"] = {split: dict(Counter(v).most_common()) for split, v in langs.items()}
    if d.lang_temperature is not None:
        data.train, langs["train"], report = resample_by_language(data.train, langs["train"], d.lang_temperature, config.training.seed)
        data.report["language_sampling"] = report
        data.report["train_size"] = len(data.train)
    data.languages = langs
