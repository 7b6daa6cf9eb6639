"""Classification metrics from a confusion matrix: accuracy, per-class and macro precision, recall and F1.

Pure Python: the trainer reduces one confusion matrix across processes and derives everything from it, and the
CLI and the studio read the same numbers back from events. A class that is never predicted (or never present)
has a precision (or recall) of 0, as scikit-learn's zero_division=0 gives.
"""

from __future__ import annotations


def classification_metrics(confusion: list[list[int]]) -> dict[str, float | list]:
    """confusion[true][predicted] counts -> accuracy, macro precision/recall/F1, per-class F1."""
    classes = range(len(confusion))
    total = sum(map(sum, confusion))
    correct = sum(confusion[c][c] for c in classes)
    predicted = [sum(confusion[t][c] for t in classes) for c in classes]
    actual = [sum(confusion[c]) for c in classes]
    precision = [confusion[c][c] / predicted[c] if predicted[c] else 0.0 for c in classes]
    recall = [confusion[c][c] / actual[c] if actual[c] else 0.0 for c in classes]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
    count = max(len(confusion), 1)
    return {
        "accuracy": correct / total if total else 0.0,
        "precision": sum(precision) / count,
        "recall": sum(recall) / count,
        "f1": sum(f1) / count,
        "f1_per_class": f1,
    }


def confusion_matrix(labels: list[int], predictions: list[int], classes: int) -> list[list[int]]:
    matrix = [[0] * classes for _ in range(classes)]
    for label, prediction in zip(labels, predictions):
        matrix[label][prediction] += 1
    return matrix
