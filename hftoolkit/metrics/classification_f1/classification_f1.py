"""Precision, recall and F1: macro-averaged and per class, single- or multi-label.

Per class: precision = tp/(tp+fp), recall = tp/(tp+fn), F1 their harmonic mean,
each 0.0 when its denominator is 0. The macro average runs over the classes that
occur in the references or the predictions: a class absent from both is left out
rather than counted as a perfect or a zero score.
"""

import datasets
import evaluate


class ClassificationF1(evaluate.Metric):
    def _info(self):
        multi = self.config_name == "multilabel"
        value = datasets.Sequence(datasets.Value("int64")) if multi else datasets.Value("int64")
        return evaluate.MetricInfo(
            description="Macro and per-class precision/recall/F1.", citation="",
            inputs_description="predictions, references: class ids, or multi-hot 0/1 lists (config 'multilabel')",
            features=datasets.Features({"predictions": value, "references": value}))

    def _compute(self, predictions, references, label_names=None):
        if self.config_name == "multilabel":
            n = len(references[0]) if references else 0
            pairs = [(c, p[c], r[c]) for p, r in zip(predictions, references) for c in range(n)]
            counts = _count(((c, bool(pred), bool(ref)) for c, pred, ref in pairs), n)
        else:
            n = max([*predictions, *references, len(label_names or []) - 1], default=-1) + 1
            counts = _count_single(predictions, references, n)
        names = label_names or [str(c) for c in range(n)]
        result, macro = {}, {"precision": [], "recall": [], "f1": []}
        for c, (tp, fp, fn) in enumerate(counts):
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            result.update({f"precision_{names[c]}": precision, f"recall_{names[c]}": recall, f"f1_{names[c]}": f1})
            if tp + fp + fn:  # the class occurs somewhere
                macro["precision"].append(precision)
                macro["recall"].append(recall)
                macro["f1"].append(f1)
        for key, values in macro.items():
            result[f"{key}_macro"] = sum(values) / len(values) if values else 0.0
        return result


def _count_single(predictions, references, n):
    counts = [[0, 0, 0] for _ in range(n)]
    for p, r in zip(predictions, references):
        if p == r:
            counts[r][0] += 1
        else:
            counts[p][1] += 1
            counts[r][2] += 1
    return counts


def _count(triples, n):
    counts = [[0, 0, 0] for _ in range(n)]
    for c, pred, ref in triples:
        if pred and ref:
            counts[c][0] += 1
        elif pred:
            counts[c][1] += 1
        elif ref:
            counts[c][2] += 1
    return counts
