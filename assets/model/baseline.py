"""A cheap baseline on the same splits: TF-IDF features and logistic regression."""

from __future__ import annotations

import numpy as np


def tfidf_logistic_regression(
    train_texts: list[str], train_labels: list[int], test_texts: list[str], seed: int = 0
) -> np.ndarray:
    """Predicted labels for `test_texts`; word 1-2 grams and char 2-5 grams, balanced classes."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    )
    model = make_pipeline(
        features,
        LogisticRegression(C=2.0, max_iter=2000, class_weight="balanced", random_state=seed),
    )
    model.fit(train_texts, train_labels)
    return model.predict(test_texts)
