"""Multi-process launches (`torchrun`, `accelerate launch`, `mpirun`): the communication backend per device, and a
check that the processes really train one model together.

Trainer leaves the backend to Accelerate, which on a CPU starts data parallel training only when told that the run is
on the CPU (`use_cpu`): without it each process of a `torchrun --nproc_per_node 2` launch trains alone on all the
data (world size 1), and with `--ddp_backend gloo` alone the data is split between the processes but the model is not
wrapped in DistributedDataParallel, so their gradients are never averaged: two half-trained models, of which only
the main process's is saved. `launch_defaults` fills in what makes the launch shard, `check_launch` refuses a launch
that still would not."""

import argparse
import os

import torch
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


def launched_world_size() -> int:
    """The number of processes the launcher started (1 without a launcher)."""
    for name in WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def _given_use_cpu(argv: list[str]) -> bool | None:
    """--use_cpu as TrainingArguments reads it (a bare flag, a value, the dashed spelling), or None when not given."""
    reader = argparse.ArgumentParser(add_help=False)
    reader.add_argument("--use_cpu", "--use-cpu", type=string_to_bool, nargs="?", const=True, default=None)
    return reader.parse_known_args(argv)[0].use_cpu


def trains_on_cpu(use_cpu: bool) -> bool:
    """Whether Trainer trains on the CPU: asked (`--use_cpu`, or `accelerate launch --cpu`), or no accelerator."""
    asked = use_cpu or string_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))
    return asked or not torch.accelerator.is_available()


def launch_defaults(recipe: dict, argv: list[str], given: set[str]) -> None:
    """Under a launch of several processes, the options that make Trainer train them as one data parallel run, as
    recipe defaults (an option on the command line wins; `check_launch` then refuses one that would not shard): on a
    CPU `use_cpu` (Accelerate's switch to data parallel on the CPU) and the gloo backend, on CUDA nccl."""
    if launched_world_size() <= 1:
        return
    use_cpu = _given_use_cpu(argv)
    if use_cpu is None:
        use_cpu = bool(recipe.get("use_cpu", False))
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
    given_backend = _argument_value(argv, "ddp_backend")
    if on_cpu and given_backend in ACCELERATOR_ONLY_BACKENDS:
        raise ValueError(
            f"--ddp_backend {given_backend} needs an accelerator, and this run trains on the CPU. Leave --ddp_backend "
            "out (hf_vit then picks gloo on a CPU and nccl on CUDA GPUs) or give --ddp_backend gloo."
        )


def _argument_value(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


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
    if args.world_size > 1 and args.process_index == 0:
        global_batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
        backend = args.distributed_state.backend if args.distributed_state is not None else args.ddp_backend
        sharding = "FSDP" if args.fsdp else "data parallel"
        logger.warning(
            f"{sharding}: {args.world_size} processes ({backend} backend, device {args.device.type}); global batch "
            f"{global_batch} = {args.per_device_train_batch_size} per device x {args.world_size} processes x "
            f"{args.gradient_accumulation_steps} accumulation step(s)."
        )
