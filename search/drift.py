"""Has a model's world changed? The statistics behind ``hps check`` and ``hps retune``, on arrays alone.

The reference is the model's own test split, recorded by production training (labels, predictions,
probabilities and pooled embeddings): data of the distribution it was chosen on, never seen while choosing.

- **With labels**: the metric on the new data against the reference's, with a bootstrap confidence interval of
  the difference (both samples resampled): ``degraded`` when the whole interval is below zero, ``better`` when
  above, else ``within noise``.
- **Without labels**, three two-sample tests of the new data against the reference, each at ``alpha / 3``
  (Bonferroni), so that ``alpha`` bounds the chance that a fresh sample of the same distribution raises a false
  alarm: the predicted-label distribution (chi-square test of the 2 x K table of counts), the prediction
  confidence (Kolmogorov-Smirnov), and the pooled embeddings (maximum mean discrepancy with a Gaussian kernel of
  median-heuristic width, p-value by permutation). ``drift`` when any test rejects.
- **Two models on the same examples** (``hps retune``): a paired bootstrap of their metric difference.

The false-alarm rate measured on fresh samples and the power on real shifts: docs/model-maintenance.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

Metric = Callable[[np.ndarray, np.ndarray], float]

ALPHA = 0.01  # family-wise false-alarm rate of the unlabelled tests together
CONFIDENCE = 0.95  # of the metric's bootstrap intervals
RESAMPLES = 1000  # bootstrap resamples
PERMUTATIONS = 1000  # of the MMD test: its smallest p-value is 1 / (PERMUTATIONS + 1)
MMD_EXAMPLES = 500  # examples per sample the MMD test uses at most (its kernel matrix grows with the square)


@dataclass
class MetricShift:
    """The metric on new data against the reference's, with bootstrap intervals."""

    value: float
    low: float
    high: float
    reference: float
    difference: float
    difference_low: float
    difference_high: float
    verdict: str  # degraded, within noise, better

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def _verdict(low: float, high: float) -> str:
    return "degraded" if high < 0 else "better" if low > 0 else "within noise"


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def metric_shift(
    metric: Metric,
    labels: np.ndarray,
    predictions: np.ndarray,
    reference_labels: np.ndarray,
    reference_predictions: np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> MetricShift:
    """The metric on the new examples and its difference from the reference's, each sample resampled on its own."""
    generator = np.random.default_rng(seed)
    new, old = [], []
    for _ in range(resamples):
        rows = generator.integers(0, len(labels), len(labels))
        reference_rows = generator.integers(0, len(reference_labels), len(reference_labels))
        new.append(metric(labels[rows], predictions[rows]))
        old.append(metric(reference_labels[reference_rows], reference_predictions[reference_rows]))
    value, reference = metric(labels, predictions), metric(reference_labels, reference_predictions)
    low, high = _interval(np.array(new), confidence)
    difference_low, difference_high = _interval(np.array(new) - np.array(old), confidence)
    return MetricShift(
        value=float(value),
        low=low,
        high=high,
        reference=float(reference),
        difference=float(value - reference),
        difference_low=difference_low,
        difference_high=difference_high,
        verdict=_verdict(difference_low, difference_high),
    )


def paired_difference(
    metric: Metric,
    labels: np.ndarray,
    challenger: np.ndarray,
    incumbent: np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float | str]:
    """The challenger's metric minus the incumbent's on the same examples, with a paired bootstrap interval
    (examples resampled together): ``better`` only when the whole interval is above zero."""
    generator = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = generator.integers(0, len(labels), len(labels))
        differences.append(metric(labels[rows], challenger[rows]) - metric(labels[rows], incumbent[rows]))
    low, high = _interval(np.array(differences), confidence)
    new, old = float(metric(labels, challenger)), float(metric(labels, incumbent))
    return {
        "challenger": new,
        "incumbent": old,
        "difference": new - old,
        "low": low,
        "high": high,
        "verdict": _verdict(low, high),
    }


def label_shift(reference: np.ndarray, new: np.ndarray, classes: int) -> dict[str, object]:
    """Chi-square test of the predicted labels' counts; the total variation distance between the proportions."""
    counts = np.array([np.bincount(reference, minlength=classes), np.bincount(new, minlength=classes)])
    seen = counts.sum(axis=0) > 0
    p_value = 1.0 if seen.sum() < 2 else float(stats.chi2_contingency(counts[:, seen])[1])
    proportions = counts / counts.sum(axis=1, keepdims=True)
    return {
        "p_value": p_value,
        "total_variation": float(np.abs(proportions[0] - proportions[1]).sum() / 2),
        "reference": proportions[0].round(4).tolist(),
        "new": proportions[1].round(4).tolist(),
    }


def confidence_shift(reference: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """Kolmogorov-Smirnov test of the probability of the predicted label; the change of its mean."""
    result = stats.ks_2samp(reference, new)
    return {
        "p_value": float(result.pvalue),
        "statistic": float(result.statistic),
        "reference_mean": float(reference.mean()),
        "new_mean": float(new.mean()),
    }


def mmd_test(
    reference: np.ndarray,
    new: np.ndarray,
    permutations: int = PERMUTATIONS,
    max_examples: int = MMD_EXAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """Maximum mean discrepancy (unbiased MMD squared) between two samples of embeddings, Gaussian kernel of
    median-heuristic width, and its permutation p-value. Each sample is subsampled to ``max_examples``."""
    generator = np.random.default_rng(seed)
    reference, new = (
        sample[generator.choice(len(sample), max_examples, replace=False)] if len(sample) > max_examples else sample
        for sample in (reference, new)
    )
    pooled = np.concatenate([reference, new]).astype(np.float64)
    squared = np.maximum((pooled**2).sum(1)[:, None] + (pooled**2).sum(1)[None, :] - 2 * pooled @ pooled.T, 0)
    bandwidth = float(np.median(squared[np.triu_indices(len(pooled), k=1)]))
    kernel = np.exp(-squared / max(bandwidth, 1e-12))
    np.fill_diagonal(kernel, 0)  # the unbiased estimate leaves out each example's kernel with itself
    n, m = len(reference), len(new)
    # Each column of `members` marks one split of the pooled examples into a first sample of n and the rest; the
    # kernel sums within and across the two follow from one matrix product for all splits at once.
    splits = [np.arange(n)] + [generator.permutation(n + m)[:n] for _ in range(permutations)]
    members = np.zeros((n + m, len(splits)))
    for column, first in enumerate(splits):
        members[first, column] = 1
    row_sums = kernel.sum(axis=1)
    within_first = (members * (kernel @ members)).sum(axis=0)
    across = members.T @ row_sums - within_first
    within_second = row_sums.sum() - 2 * across - within_first
    mmd2 = within_first / (n * (n - 1)) + within_second / (m * (m - 1)) - 2 * across / (n * m)
    observed = float(mmd2[0])
    exceeded = int((mmd2[1:] >= observed).sum())
    return {"p_value": (1 + exceeded) / (1 + permutations), "mmd2": observed, "bandwidth": bandwidth}


def drift(
    reference_predictions: np.ndarray,
    reference_confidence: np.ndarray,
    reference_embeddings: np.ndarray,
    predictions: np.ndarray,
    confidence: np.ndarray,
    embeddings: np.ndarray,
    classes: int,
    alpha: float = ALPHA,
    seed: int = 0,
) -> dict[str, object]:
    """The three unlabelled tests, each at ``alpha / 3``, and the verdict: ``drift`` when any rejects."""
    tests = {
        "predicted_labels": label_shift(reference_predictions, predictions, classes),
        "confidence": confidence_shift(reference_confidence, confidence),
        # enough permutations that the smallest p-value, 1 / (permutations + 1), can fall below alpha / 3
        "embeddings": mmd_test(reference_embeddings, embeddings, max(PERMUTATIONS, math.ceil(6 / alpha)), seed=seed),
    }
    threshold = alpha / len(tests)
    flagged = [name for name, test in tests.items() if test["p_value"] < threshold]
    return {"verdict": "drift" if flagged else "no drift", "flagged": flagged, "threshold": threshold, **tests}
