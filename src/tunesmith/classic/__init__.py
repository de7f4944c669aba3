"""Classical baselines (TF-IDF + linear models) that a fine-tuned model must beat."""

from tunesmith.classic.tfidf import tfidf_svm_predict

__all__ = ["tfidf_svm_predict"]
