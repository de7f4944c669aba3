"""TF-IDF over word and character n-grams with a linear SVM: the strong classical text baseline.

On SMS spam it reaches about 0.99 accuracy, above many tutorial fine-tunes; every classification
run reports it beside the fine-tuned model so users see what they are beating.
"""

from __future__ import annotations

from collections.abc import Sequence


def tfidf_features():
    """Unfitted word (1-2)-gram + char_wb (2-5)-gram TF-IDF union: the features of every classical baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )


def tfidf_svm_predict(train_texts: Sequence[str], train_labels: Sequence[str], eval_texts: Sequence[str], *, seed: int = 0) -> list[str]:
    """Fit word (1-2)-gram + char (2-5)-gram TF-IDF with a LinearSVC and predict the eval texts."""
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(tfidf_features(), LinearSVC(C=1.0, random_state=seed))
    model.fit(list(train_texts), list(train_labels))
    return [str(p) for p in model.predict(list(eval_texts))]
