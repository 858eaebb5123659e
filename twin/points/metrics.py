"""Accuracy measures for binary point classifications (e.g. ground vs not ground).

All take two boolean arrays of the same length, ``predicted`` and ``truth``, and
return plain floats; memory is constant beyond the inputs.
"""

from __future__ import annotations

import numpy as np

from twin.errors import ParameterError


def confusion(predicted, truth) -> tuple[int, int, int, int]:
    """(true positives, false positives, false negatives, true negatives)."""
    p = np.asarray(predicted, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ParameterError(f"predicted {p.shape} and truth {t.shape} differ in shape")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def total_error(predicted, truth) -> float:
    """Fraction of points classified wrongly (type I + type II over all), 0..1."""
    tp, fp, fn, tn = confusion(predicted, truth)
    n = tp + fp + fn + tn
    return (fp + fn) / n if n else 0.0


def type_errors(predicted, truth) -> tuple[float, float]:
    """(type I: ground rejected / ground, type II: objects accepted / objects)."""
    tp, fp, fn, tn = confusion(predicted, truth)
    return (fn / (tp + fn) if tp + fn else 0.0, fp / (fp + tn) if fp + tn else 0.0)


def kappa(predicted, truth) -> float:
    """Cohen's kappa: agreement beyond chance, 1 = perfect, 0 = chance."""
    tp, fp, fn, tn = confusion(predicted, truth)
    n = tp + fp + fn + tn
    if n == 0:
        return 1.0
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def precision_recall(predicted, truth) -> tuple[float, float]:
    """(precision, recall) of the positive class."""
    tp, fp, fn, _ = confusion(predicted, truth)
    return (tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 1.0)


def summary(predicted, truth) -> dict[str, float]:
    """All of the above in one JSON-ready dict."""
    t1, t2 = type_errors(predicted, truth)
    p, r = precision_recall(predicted, truth)
    return {
        "total_error": total_error(predicted, truth),
        "type1": t1,
        "type2": t2,
        "kappa": kappa(predicted, truth),
        "precision": p,
        "recall": r,
        "n": int(np.asarray(truth).size),
    }
