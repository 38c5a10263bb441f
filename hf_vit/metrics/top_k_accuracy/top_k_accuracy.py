"""Top-k accuracy: the share of images whose reference label is among the k highest scores."""

import datasets
import evaluate
import numpy as np


class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of images whose true class is among the k classes with the highest scores.",
            citation="",
            inputs_description="predictions: per-class scores (logits); references: true class ids; k: how many.",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions)
        if not 0 < k <= scores.shape[1]:
            raise ValueError(f"top_k_accuracy: k={k} must be between 1 and the number of classes ({scores.shape[1]}).")
        top_k = np.argsort(-scores, axis=1)[:, :k]
        hits = (top_k == np.asarray(references)[:, None]).any(axis=1)
        return {f"top{k}_accuracy": float(hits.mean())}
