"""`ImageClassificationTrainer`: transformers' `Trainer` with what an hf_vit run adds to it: a training collator of
its own (MixUp/CutMix), layer-wise learning-rate decay, a stop at a non-finite loss, FSDP on a CPU, and hf_vit's model
folder and card for the output and the Hub push."""

import json
from pathlib import Path

import torch
from transformers import BaseImageProcessor, Trainer

from .distributed import FullyShardedTrainerMixin
from .finetuning import is_lora_model, layer_decay_parameter_groups, merged_copy
from .hub import push_model
from .modeling_hf_vit import HfViTForImageClassification
from .preflight import TRAINER_STATE_FILE, last_complete_checkpoint
from .processing import save_model_folder


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before the optimizer step of that batch."""


class ImageClassificationTrainer(FullyShardedTrainerMixin, Trainer):
    """Trainer whose training batches go through their own collator (MixUp/CutMix), while evaluation batches keep
    their integer labels, and that stops at a non-finite loss."""

    def __init__(self, *args, train_data_collator=None, layer_decay: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator or self.data_collator
        self.layer_decay = layer_decay
        self.resumed_from: str | None = None

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Trainer's optimizer (--optim, its arguments), with --layer_decay's parameter groups when it is given."""
        if self.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            raise ValueError(
                f"--layer_decay sets the learning rate per parameter group, which --optim {self.args.optim} does not "
                "take (it groups the parameters itself); use --optim adamw_torch, or leave out --layer_decay."
            )
        groups = layer_decay_parameter_groups(model, self.args.learning_rate, self.args.weight_decay,
                                              self.layer_decay, set(self.get_decay_parameter_names(model)))  # fmt: skip
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def write_model_folder(self, processor: BaseImageProcessor, merge_lora: bool = False) -> None:
        """Write hf_vit's model folder to --output_dir once, from the main process: the weights (a PEFT adapter under
        LoRA, or with `merge_lora` the merged model), config, code and processor. Under FSDP the full weights are
        gathered first (a collective: every process takes part) and loaded into an unsharded copy of the model."""
        state_dict = self.accelerator.get_state_dict(self.model) if self.is_fsdp_enabled else None
        if not self.is_world_process_zero():
            return
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:
            model = HfViTForImageClassification(model.config)
            model.load_state_dict(state_dict)
        what = "model folder"
        # Under LoRA, the adapter (adapter_config.json, adapter_model.safetensors), or merged: a full model.
        if is_lora_model(model):
            model, what = (merged_copy(model), "model folder (LoRA merged)") if merge_lora else (model, "PEFT adapter")
        save_model_folder(model, processor, self.args.output_dir)
        print(f"hf_vit: {what} written to {self.args.output_dir}")

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision: str | None = None, **kwargs) -> str | None:  # fmt: skip
        """Trainer's push, with hf_vit's folder and card: Trainer's own would upload its generic card and the pickled
        training_args.bin. The model folder must already be written (`write_model_folder`)."""
        if not self.is_world_process_zero():
            return None
        return push_model(self.args.output_dir, self.hub_model_id, private=bool(self.args.hub_private_repo),
                          revision=revision or self.args.hub_revision, commit_message=commit_message,
                          token=token or self.args.hub_token)  # fmt: skip

    def get_train_dataloader(self):
        eval_collator, self.data_collator = self.data_collator, self.train_data_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        # The checkpoint is checked (complete, same learning rate) by training.prepare_training, before the data is
        # loaded; kept here for the message of a non-finite loss.
        self.resumed_from = resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Trainer's step (forward and backward), then a stop at a NaN or infinite loss, before the optimizer step
        of the batch: Trainer's own `logging_nan_inf_filter` would only leave the loss out of the logs and step on.
        Trainer turns this loss into a Python bool right after anyway (that filter), so the check adds no device
        sync; with several processes the losses are gathered so that every process stops at the same step."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        losses = loss.detach().reshape(1)
        if self.accelerator.num_processes > 1:
            losses = self.accelerator.gather(losses)
        if not torch.isfinite(losses).all():
            raise NonFiniteLossError(self._non_finite_loss_message(losses))
        return loss

    def _non_finite_loss_message(self, losses: torch.Tensor) -> str:
        args = self.args
        values = ", ".join(f"{value:g}" for value in losses.float().tolist())
        precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "float32"
        clipping = (
            f"a smaller --max_grad_norm (now {args.max_grad_norm:g})"
            if args.max_grad_norm and args.max_grad_norm > 0
            else "--max_grad_norm 1.0 (gradient clipping is off)"
        )
        message = (
            f"Training stopped at step {self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}): the loss is "
            f"{values}, not a finite number. The optimizer step of this batch was not taken. Likely fixes: a lower "
            f"--learning_rate (now {args.learning_rate:g}; {self._get_learning_rate():g} at this step) or a longer "
            f"--warmup_steps; {clipping}; and with --fp16 or --bf16, half-precision overflow: train in float32, or "
            f"prefer --bf16 to --fp16 (this run: {precision})."
        )
        checkpoint = self._last_checkpoint()
        if checkpoint is None:
            return f"{message} No checkpoint was saved before this step: start the run again with the fix."
        return (
            f"{message} The last checkpoint saved before it, {checkpoint}, is untouched: start again with the fix, "
            f"or continue from it with --resume_from_checkpoint {checkpoint} (with its learning rate: resuming "
            "continues its schedule) and a gradient or precision fix."
        )

    def _last_checkpoint(self) -> Path | None:
        candidates = [last_complete_checkpoint(Path(self.args.output_dir))]
        candidates.append(Path(self.resumed_from) if self.resumed_from else None)
        candidates = [path for path in candidates if path is not None]

        def step(path: Path) -> int:
            return json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"]

        return max(candidates, key=step, default=None)
