"""Classical baselines (TF-IDF + linear models, trees, an ensemble) that a fine-tuned model must beat."""

from tunesmith.classic.baselines import BASELINES, LinearTextClassifier, load_baseline, run_baselines
from tunesmith.classic.tfidf import tfidf_features, tfidf_svm_predict

__all__ = ["BASELINES", "LinearTextClassifier", "load_baseline", "run_baselines", "tfidf_features", "tfidf_svm_predict"]
