"""Classical baselines for text tasks: what a user could build in ten lines, fit on a job's
training rows, so the job can say what fine-tuning earns. scikit-learn is imported inside
the functions: it belongs to the train extra, and this module imports on a serving install."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetune.task import Input, Text, TextPair

TFIDF_DESCRIPTION = (
    "TF-IDF word 1-2-grams + character 2-5-grams (sublinear tf) + logistic regression (C=10)"
)


def tfidf_features() -> Any:
    """Word 1-2-grams and character 2-5-grams, sublinear tf: on BBC News the character
    n-grams add about half a point over words alone, so the baseline is not a straw man."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=200_000
        ),
    )


def fit_tfidf_logistic_regression(train_texts: Sequence[str], train_targets: npt.ArrayLike) -> Any:
    """The TF-IDF + logistic regression pipeline fit on (train_texts, train_targets).

    train_targets are label ids (n,) for one label per text, or a 0/1 matrix (n, labels)
    for several (one logistic regression per label).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    targets = np.asarray(train_targets)
    classifier: Any = LogisticRegression(C=10, max_iter=2000)
    if targets.ndim == 2:
        classifier = OneVsRestClassifier(classifier)
    return make_pipeline(tfidf_features(), classifier).fit(list(train_texts), targets)


def tfidf_logistic_regression(
    train_texts: Sequence[str], train_targets: npt.ArrayLike, texts: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Fit TF-IDF + logistic regression on (train_texts, train_targets), predict texts
    (same shape as the targets: label ids, or a 0/1 matrix)."""
    model = fit_tfidf_logistic_regression(train_texts, train_targets)
    predicted: npt.NDArray[np.int64] = np.asarray(model.predict(list(texts)), dtype=np.int64)
    return predicted


def input_texts(inputs: Sequence[Input]) -> list[str]:
    """One text per text or text-pair input for a bag-of-words model (a pair joined on a
    line break); inputs of other kinds have no text and are left out."""
    return [
        item.text if isinstance(item, Text) else f"{item.text} \n {item.text_pair}"
        for item in inputs
        if isinstance(item, Text | TextPair)
    ]
