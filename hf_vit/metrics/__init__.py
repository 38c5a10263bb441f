"""evaluate metric modules kept in the repository, and Trainer's `compute_metrics` built from them.
`evaluate.load("accuracy")` fetches its script from the Hub, which fails offline, so hf_vit loads these by path.
evaluate scans their imports: keep one import per line."""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent


def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of this folder's modules: 'accuracy', 'top_k_accuracy' or 'macro_f1'."""
    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        choices = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No metric module {name!r} in {METRICS_DIR}; choose one of {choices}.")
    # In memory: no cache files, which two training processes computing the same metric would contend for.
    return evaluate.load(str(path), keep_in_memory=True)


def build_compute_metrics(num_labels: int):
    """Trainer's `compute_metrics`: accuracy and macro F1, plus top-5 accuracy when there are more than 5 classes."""
    accuracy, macro_f1 = load_metric("accuracy"), load_metric("macro_f1")
    top_k = load_metric("top_k_accuracy") if num_labels > 5 else None

    def compute_metrics(eval_prediction) -> dict[str, float]:
        logits, references = eval_prediction.predictions, eval_prediction.label_ids
        predictions = logits.argmax(-1)
        results = accuracy.compute(predictions=predictions, references=references)
        results |= macro_f1.compute(predictions=predictions, references=references, labels=list(range(num_labels)))
        if top_k is not None:
            results |= top_k.compute(predictions=logits, references=references, k=5)
        return results

    return compute_metrics
