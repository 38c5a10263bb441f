"""Multi-process launches (`torchrun`, `accelerate launch`, `mpirun`): the communication backend per device, and a
check that the processes really train one model together.

Trainer leaves the backend to Accelerate, which on a CPU starts data parallel training only when told that the run is
on the CPU (`use_cpu`): without it each process of a `torchrun --nproc_per_node 2` launch trains alone on all the
data (world size 1), and with `--ddp_backend gloo` alone the data is split between the processes but the model is not
wrapped in DistributedDataParallel, so their gradients are never averaged: two half-trained models, of which only
the main process's is saved. `launch_defaults` fills in what makes the launch shard, `check_launch` refuses a launch
that still would not."""

import json
import os

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import TrainingArguments
from transformers.hf_argparser import string_to_bool
from transformers.training_args import ParallelMode
from transformers.utils import logging

logger = logging.get_logger("hf_vit")

# Where launchers put the number of processes: torchrun and `accelerate launch` (WORLD_SIZE), and the MPI launchers
# Accelerate reads too (Intel MPI / MPICH, Open MPI, MVAPICH).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# Backends that need an accelerator: on a CPU they cannot start.
ACCELERATOR_ONLY_BACKENDS = ("nccl", "xccl", "hccl", "cncl", "mccl")
# FSDP's unit of sharding: each transformer block is gathered for its own forward and backward, then freed.
FSDP_WRAPPED_LAYER = "HfViTLayer"


def launched_world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def trains_on_cpu(use_cpu: bool) -> bool:
    """Whether Trainer trains on the CPU: asked (`--use_cpu`, or `accelerate launch --cpu`), or no accelerator."""
    asked = use_cpu or string_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))
    return asked or not torch.accelerator.is_available()


def fsdp_switch(value: str) -> str | bool | None:
    """The type of `--fsdp`: `True` / `False` (any case: the spelling transformers' own deprecation message suggests,
    which its `TrainingArguments` refuse as an unknown FSDP option) as on and off (None, as when not given); other
    text, transformers' legacy FSDP options (`full_shard auto_wrap`), as given."""
    switch = value.strip().lower()
    if switch in ("true", "false"):
        return True if switch == "true" else None
    return value


def launch_defaults(recipe: dict, given: dict) -> None:
    """Fill the recipe with what makes Trainer train the processes of a launch as one data parallel run (`given`,
    the options on the command line, win; `check_launch` then refuses a launch that would not shard): on a CPU
    `use_cpu` (Accelerate's switch to data parallel on the CPU) and the gloo backend, on CUDA nccl; with --fsdp,
    `HfViTLayer` as the wrapped layer."""
    if given.get("fsdp") and "fsdp_config" not in given:
        recipe["fsdp_config"] = json.dumps({"transformer_layer_cls_to_wrap": [FSDP_WRAPPED_LAYER]})
    if launched_world_size() <= 1:
        return
    use_cpu = bool(given.get("use_cpu", recipe.get("use_cpu", False)))
    on_cpu = trains_on_cpu(use_cpu)
    if on_cpu and not use_cpu and "use_cpu" in given:
        raise ValueError(
            f"--use_cpu False under a launch of {launched_world_size()} processes on a CPU: Accelerate would not "
            "average the processes' gradients (each would train its own model). Leave --use_cpu out (hf_vit then "
            "sets it under a launcher) or give --use_cpu True."
        )
    backend = "gloo" if on_cpu else "nccl" if torch.cuda.is_available() else None
    if on_cpu and "use_cpu" not in given:
        recipe["use_cpu"] = True
    if backend is not None and "ddp_backend" not in given:
        recipe["ddp_backend"] = backend
    given_backend = given.get("ddp_backend")
    if on_cpu and given_backend in ACCELERATOR_ONLY_BACKENDS:
        raise ValueError(
            f"--ddp_backend {given_backend} needs an accelerator, and this run trains on the CPU. Leave --ddp_backend "
            "out (hf_vit then picks gloo on a CPU and nccl on CUDA GPUs) or give --ddp_backend gloo."
        )


def fsdp_requested(args: TrainingArguments) -> bool:
    """--fsdp, or an `accelerate launch` with FSDP (`--use_fsdp`, or `distributed_type: FSDP` in its config)."""
    return bool(args.fsdp) or string_to_bool(os.environ.get("ACCELERATE_USE_FSDP", "false"))


def check_launch(args: TrainingArguments) -> None:
    """Refuse a multi-process launch that Trainer would not train as one data parallel run (each process alone, or
    the data split without averaged gradients), naming the fix; and log the world size and the global batch."""
    launched = launched_world_size()
    distributed = args.parallel_mode == ParallelMode.DISTRIBUTED
    if launched > 1 and (args.world_size != launched or not distributed):
        on_cpu = trains_on_cpu(args.use_cpu)
        if on_cpu and not args.use_cpu:
            fix = (
                "give --use_cpu True (or leave --use_cpu out: hf_vit then sets it under a launcher); on a CPU, "
                "Accelerate averages the processes' gradients only with it"
            )
        else:
            fix = "leave --ddp_backend out (hf_vit then picks gloo on a CPU and nccl on CUDA GPUs)"
        how = (
            "each would train alone on all the data"
            if args.world_size == 1
            else "the data would be split between them but their gradients never averaged"
        )
        raise ValueError(
            f"This command was launched as {launched} processes, but Trainer set up {args.world_size} process(es) "
            f"in mode {args.parallel_mode.value!r} (backend {args.ddp_backend or 'default'}, use_cpu "
            f"{args.use_cpu}): {how}, not one data parallel run. Fix: {fix}."
        )
    if fsdp_requested(args) and args.world_size == 1:
        raise ValueError(
            "--fsdp shards the model across processes and this run has one: launch it with `torchrun "
            "--nproc_per_node N -m hf_vit.cli train ...` (or `accelerate launch`), or leave --fsdp out."
        )
    if fsdp_requested(args) and trains_on_cpu(args.use_cpu) and args.save_strategy != "no":
        # transformers' --fsdp defaults to full state dicts; Accelerate's own FSDP settings to sharded ones.
        plugin_args = args.fsdp_plugin_args or {}
        state_dict_type = plugin_args.get("state_dict_type") or os.environ.get("FSDP_STATE_DICT_TYPE")
        if str(state_dict_type or "SHARDED_STATE_DICT").upper() != "FULL_STATE_DICT":
            raise ValueError(
                f"FSDP on a CPU with {state_dict_type or 'SHARDED_STATE_DICT (Accelerate default)'} checkpoints: "
                "sharded checkpoints hung at the first checkpoint on a CPU (gloo) launch here. Save full ones: "
                "`accelerate launch --fsdp_state_dict_type FULL_STATE_DICT` (`fsdp_state_dict_type: "
                'FULL_STATE_DICT` in its config), or `--fsdp --fsdp_config \'{"state_dict_type": '
                '"FULL_STATE_DICT"}\'`; or train without checkpoints (--save_strategy no).'
            )
    if args.world_size > 1 and args.process_index == 0:
        global_batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        backend = args.distributed_state.backend if args.distributed_state is not None else args.ddp_backend
        sharding = "FSDP" if fsdp_requested(args) else "data parallel"
        logger.warning(
            f"{sharding}: {args.world_size} processes ({backend} backend, device {args.device.type}); global batch "
            f"{global_batch} = {args.per_device_train_batch_size} per device x {args.world_size} processes x "
            f"{args.gradient_accumulation_steps} accumulation step(s)."
        )


class FullyShardedTrainerMixin:
    """Trainer methods (mixed in before `Trainer`) that make --fsdp shard on a CPU too, and save checkpoints of an
    FSDP2 model that load like any hf_vit folder.

    Accelerate switches to FSDP only for accelerator process groups: under a CPU (gloo) launch it sets the plugin
    aside and silently trains plain DistributedDataParallel. FSDP2's `fully_shard` itself runs on the CPU with gloo,
    so the shared Accelerate state is switched to FSDP here, as Accelerate does it on GPUs: both shared states (every
    new `AcceleratorState` copies the process's type from `PartialState`), the plugin, and its mixed precision."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if not fsdp_requested(self.args) or state.distributed_type != DistributedType.MULTI_CPU:
            return
        # From --fsdp / --fsdp_config, else from `accelerate launch`'s FSDP settings (FSDP_* variables), as Accelerate.
        plugin_args = self.args.fsdp_plugin_args or {}
        plugin = FullyShardedDataParallelPlugin(**plugin_args)
        if state.mixed_precision != "no":
            plugin.set_mixed_precision(state.mixed_precision)
        PartialState().distributed_type = DistributedType.FSDP
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin
        self.is_fsdp_enabled = True

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, with the model's own class while it writes: FSDP2 turns the model's class into a
        subclass defined in torch (`FSDPHfViTForImageClassification`), and `save_pretrained` would copy torch's
        FSDP source files into the checkpoint and point config.json's `auto_map` at them. Saving with a given state
        dict reads the config and the class, not the sharded parameters."""
        from torch.distributed.fsdp import FSDPModule

        model = self.model
        sharded_class = type(model)
        if not issubclass(sharded_class, FSDPModule) or not self.args.should_save:
            return super()._save(output_dir, state_dict)
        model.__class__ = next(cls for cls in sharded_class.__mro__ if not issubclass(cls, FSDPModule))
        try:
            return super()._save(output_dir, state_dict)
        finally:
            model.__class__ = sharded_class
