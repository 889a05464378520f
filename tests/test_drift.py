"""The statistics behind ``hps check`` and ``hps retune`` (hps.search.drift), on samples whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from hps.search.drift import drift, label_shift, metric_shift, mmd_test, paired_difference


def _labelled(rng: np.random.Generator, size: int, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 3, size)
    wrong = rng.random(size) > accuracy
    return labels, np.where(wrong, (labels + 1) % 3, labels)


@pytest.mark.parametrize(("accuracy", "verdict"), [(0.6, "degraded"), (0.8, "within noise"), (0.95, "better")])
def test_the_metric_verdict_follows_the_interval_of_the_difference(accuracy, verdict):
    rng = np.random.default_rng(0)
    reference = _labelled(rng, 1000, 0.8)
    shift = metric_shift(accuracy_score, *_labelled(rng, 400, accuracy), *reference, resamples=400)
    assert shift.verdict == verdict
    assert shift.low <= shift.value <= shift.high
    assert shift.difference == pytest.approx(shift.value - shift.reference)
    assert (shift.difference_high < 0) == (verdict == "degraded") and (shift.difference_low > 0) == (
        verdict == "better"
    )


def test_a_labelled_batch_of_the_same_distribution_is_rarely_called_degraded():
    rng = np.random.default_rng(1)
    reference = _labelled(rng, 1000, 0.8)
    verdicts = [
        metric_shift(accuracy_score, *_labelled(rng, 200, 0.8), *reference, resamples=300).verdict for _ in range(40)
    ]
    assert verdicts.count("within noise") >= 36  # a 95% interval: about 2 of 40 outside by chance


def test_the_paired_comparison_promotes_only_a_clear_winner():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    incumbent = np.where(rng.random(500) < 0.75, labels, 1 - labels)
    better = np.where(rng.random(500) < 0.5, labels, incumbent)  # right on half the examples the incumbent missed
    assert paired_difference(accuracy_score, labels, better, incumbent, resamples=400)["verdict"] == "better"
    same = paired_difference(accuracy_score, labels, incumbent.copy(), incumbent, resamples=400)
    assert same["verdict"] == "within noise" and same["low"] == same["high"] == 0
    worse = paired_difference(accuracy_score, labels, 1 - incumbent, incumbent, resamples=400)
    assert worse["verdict"] == "degraded" and worse["difference"] < 0


def test_the_label_test_sees_a_moved_class_mix_and_not_a_fresh_sample():
    rng = np.random.default_rng(3)
    reference = rng.choice(4, 1000, p=[0.4, 0.3, 0.2, 0.1])
    assert label_shift(reference, rng.choice(4, 300, p=[0.4, 0.3, 0.2, 0.1]), 4)["p_value"] > 0.01
    moved = label_shift(reference, rng.choice(4, 300, p=[0.1, 0.2, 0.3, 0.4]), 4)
    assert moved["p_value"] < 1e-6 and moved["total_variation"] > 0.3
    assert label_shift(np.zeros(50, int), np.zeros(50, int), 4)["p_value"] == 1.0  # one class on both sides


def test_mmd_is_the_unbiased_estimate_and_its_permutation_test_holds_its_level():
    rng = np.random.default_rng(4)
    first, second = rng.normal(size=(40, 5)), rng.normal(0.5, 1, size=(30, 5))
    result = mmd_test(first, second, permutations=50)

    def kernel(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / result["bandwidth"])

    within_first, within_second = kernel(first, first), kernel(second, second)
    np.fill_diagonal(within_first, 0)
    np.fill_diagonal(within_second, 0)
    expected = within_first.sum() / (40 * 39) + within_second.sum() / (30 * 29) - 2 * kernel(first, second).mean()
    assert result["mmd2"] == pytest.approx(expected)

    p_values = [mmd_test(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), 200, seed=s)["p_value"] for s in range(60)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.12  # its level: 5% of fresh samples, with room for 60 draws
    assert mmd_test(rng.normal(size=(100, 8)), rng.normal(0.4, 1, size=(100, 8)), 200)["p_value"] < 0.01


def test_drift_tests_each_at_a_third_of_alpha_and_flags_what_moved():
    rng = np.random.default_rng(5)

    def sample(size: int, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        embeddings = rng.normal(shift, 1, size=(size, 16))
        return (embeddings[:, 0] > 0).astype(int), 1 / (1 + np.exp(-np.abs(embeddings[:, 0]))), embeddings

    reference = sample(600, 0.0)
    fresh = drift(*reference, *sample(200, 0.0), classes=2, alpha=0.03)
    assert fresh["threshold"] == pytest.approx(0.01) and fresh["verdict"] == "no drift" and fresh["flagged"] == []
    shifted = drift(*reference, *sample(200, 0.6), classes=2)
    assert shifted["verdict"] == "drift" and {"predicted_labels", "embeddings"} <= set(shifted["flagged"])
    # a stricter alpha gets enough permutations for the embedding test to reach below alpha / 3
    strict = drift(*reference, *sample(200, 0.6), classes=2, alpha=0.001)
    assert strict["embeddings"]["p_value"] < 0.001 / 3 and "embeddings" in strict["flagged"]
