import numpy as np
import pytest

from assets.serving.champion import LabelSetMismatchError, label_mapping


def test_the_same_classes_in_another_order_are_matched_by_name():
    to_challenger = label_mapping(["positive", "negative"], ["negative", "positive"])
    champion_ids = np.array([0, 0, 1])  # positive, positive, negative
    assert to_challenger[champion_ids].tolist() == [1, 1, 0]
    assert label_mapping(["a", "b"], ["a", "b"]).tolist() == [0, 1]


def test_other_classes_are_refused_naming_both_sets():
    with pytest.raises(LabelSetMismatchError) as error:
        label_mapping(["positive", "negative"], ["positive", "negative", "neutral"])
    message = str(error.value)
    assert "['positive', 'negative'] differ from the challenger's" in message
    assert "['positive', 'negative', 'neutral']" in message
    assert "force: true" in message
