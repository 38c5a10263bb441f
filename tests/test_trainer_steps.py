"""The model trains with transformers' Trainer on a `datasets` image set, as any transformers model does."""

import numpy as np
import torch
from conftest import tiny_config
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from transformers import Trainer, TrainingArguments

from hf_vit import HfViTForImageClassification, build_image_processor


def stripes_dataset(count: int = 64, seed: int = 0) -> Dataset:
    """Two classes a ViT must look at patches to tell apart: horizontal vs vertical stripes, with noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(count):
        label = index % 2
        stripes = (np.arange(16) // 2 % 2 * 200).astype(np.uint8)
        pattern = np.broadcast_to(stripes[:, None] if label == 0 else stripes[None, :], (16, 16))
        noisy = np.clip(pattern + rng.normal(0, 30, (16, 16)), 0, 255).astype(np.uint8)
        images.append(PILImage.fromarray(noisy, "L"))
        labels.append(["horizontal", "vertical"][label])
    features = Features({"image": Image(), "label": ClassLabel(names=["horizontal", "vertical"])})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_a_few_trainer_steps_lower_the_loss(tmp_path):
    dataset = stripes_dataset()
    names = dataset.features["label"].names
    torch.manual_seed(0)
    model = HfViTForImageClassification(
        tiny_config(num_labels=2, id2label=dict(enumerate(names)), problem_type="single_label_classification")
    )
    processor = build_image_processor(model.config)

    def preprocess(batch):
        return {
            "pixel_values": processor(batch["image"], return_tensors="pt")["pixel_values"],
            "labels": batch["label"],
        }

    dataset = dataset.with_transform(preprocess)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=40,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        warmup_steps=0.1,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.5 * before, (before, after)
