"""evaluate metric modules kept in the repository: `evaluate.load("accuracy")` fetches its script from the Hub,
which fails offline, so hf_vit loads these by path. evaluate scans their imports: keep one import per line."""

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
