import pytest

from tunesmith.data.languages import column_languages, resample_by_language, temperature_resample
from tunesmith.data.texts import load_texts
from tunesmith.errors import UserError


def test_temperature_flattens_towards_uniform():
    counts = {"en": 900, "de": 90, "zh": 10}
    assert temperature_resample(counts, 1.0) == counts
    flat = temperature_resample(counts, 100.0)
    assert max(flat.values()) - min(flat.values()) < 0.1 * sum(counts.values())
    mid = temperature_resample(counts, 2.0)
    assert counts["zh"] < mid["zh"] < mid["de"] < mid["en"] < counts["en"]
    assert abs(sum(mid.values()) - 1000) <= 3
    with pytest.raises(UserError, match=">= 1"):
        temperature_resample(counts, 0.5)


def test_resample_keeps_every_small_language_example_and_is_seeded(tmp_path):
    rows = [f"text {i},{'a' if i % 2 else 'b'},{'en' if i < 90 else 'de'}" for i in range(100)]
    (tmp_path / "d.csv").write_text("text,label,lang\n" + "\n".join(rows) + "\n")
    texts = load_texts(str(tmp_path / "d.csv"))
    langs = column_languages(texts, "lang")
    assert langs.count("de") == 10
    out, out_langs, report = resample_by_language(texts, langs, 3.0, seed=1)
    assert report["after"]["de"] > 10 and len(out) == len(out_langs)
    assert {t for t, lang in zip(out.texts, out_langs) if lang == "de"} == {t for t, lang in zip(texts.texts, langs) if lang == "de"}
    again = resample_by_language(texts, langs, 3.0, seed=1)[0]
    assert again.texts == out.texts


def test_missing_language_column(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(UserError, match="no language column named 'lang'"):
        column_languages(load_texts(str(tmp_path / "d.csv")), "lang")


def test_per_language_metrics_through_training(tmp_path, tiny_args):
    import tunesmith
    from conftest import make_texts

    rows = make_texts(120)
    lines = [f"{t},{lab},{'en' if i % 4 else 'de'}" for i, (t, lab) in enumerate(rows)]
    (tmp_path / "d.csv").write_text("text,label,lang\n" + "\n".join(lines) + "\n")
    run = tunesmith.train(
        {"data": {"train": str(tmp_path / "d.csv"), "lang_col": "lang", "lang_temperature": 2.0}}, **tiny_args, out=str(tmp_path / "r")
    )
    per = run.metrics["eval"]["per_language"]
    assert set(per) == {"en", "de"} and sum(m["n"] for m in per.values()) == run.metrics["eval"]["n"]
    import json

    report = json.loads((run.dir / "data.json").read_text())
    assert report["language_sampling"]["after"]["de"] > report["language_sampling"]["before"]["de"]
