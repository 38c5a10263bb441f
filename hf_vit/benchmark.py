"""`hf-vit benchmark`: hf_vit against transformers' ViT (sdpa and eager) and timm, with the same weights.

Every contender is built from one config and holds the weights of one hf_vit model (exported with
`hf_vit.convert`), and the run checks that their logits agree before timing, so all do equal work. Modes:
inference (`torch.inference_mode`) and a training step (forward, cross-entropy, backward, fused AdamW step).
After a warm-up, contenders run interleaved round by round (A B C D A B C D ...) together with square matrix
multiplies (torch.mm, and oneDNN's on CPU in float32), so machine drift hits all alike; each figure is the median
over rounds.

Reported per contender and mode: images/s, hf_vit's ratio to it, achieved FLOP/s from the analytic count
(`hf_vit.flops.forward_flops`, training = 3 x forward) and its fraction of the matrix-multiply rate of the same
rounds, and the peak memory of a steady-state step above what is held before it (activations, gradients,
workspaces), measured in a fresh process per contender and mode (CUDA: max allocated; CPU: the resident set's
high-water mark, with malloc returning freed blocks to the system).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .cli_args import CommandParser
from .configuration_hf_vit import HfViTConfig
from .flops import forward_flops
from .modeling_hf_vit import HfViTForImageClassification
from .presets import PRESETS, preset_config
from .speedups import ONEDNN_LINEAR, apply

# "hf_vit": the installed package, with `hf_vit.speedups.apply`; "hf_vit-plain": the model file alone, as a Hub user
# without hf_vit runs it through remote code.
CONTENDERS = ("hf_vit", "hf_vit-plain", "transformers-sdpa", "transformers-eager", "timm")
MODES = ("inference", "training")
# Pseudo-contenders that measure the machine's matrix-multiply rate in each round: torch.mm (torch's default BLAS,
# what F.linear uses), and on CPU in float32 also oneDNN's matrix product, which `hf_vit.speedups` may use instead. The
# faster of the two is the rate that "of matmul rate" divides by.
MATMUL = "matmul"
MATMUL_ONEDNN = "matmul-onednn"
MATMULS = (MATMUL, MATMUL_ONEDNN)
ONEDNN_CHOICES = {"auto": "auto", "on": True, "off": False}  # --onednn-linear -> hf_vit.speedups.apply
LOGITS_TOLERANCE = 1e-4  # max |logit difference| between contenders in float32 eager


@dataclass
class Settings:
    preset: str = "vit-small-patch16-224"
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    freeze: bool = False  # inference compiled with inductor's weight freezing (implies compile)
    repeats: int = 10
    warmup: int = 3
    num_labels: int = 1000
    threads: int | None = None
    contenders: tuple[str, ...] = CONTENDERS
    modes: tuple[str, ...] = MODES
    memory: bool = True
    profile: str | None = None  # append each contender's torch.profiler table (top operators) to this file
    retain_freed_memory: bool = True  # CPU: see `retain_freed_memory`
    seed: int = 0
    onednn_linear: str = "auto"  # hf_vit.speedups.apply's choice: "auto", "on" or "off"


@dataclass
class Result:
    contender: str
    mode: str
    images_per_s: float
    seconds: list[float] = field(default_factory=list)
    flops_per_s: float = 0.0  # the network's FLOPs (the same count for every contender) per second
    matmul_fraction: float = 0.0
    executed_matmul_fraction: float = 0.0  # FLOPs this contender executes per second, over the matmul rate
    hf_vit_ratio: float | None = None  # hf_vit images/s over this contender's
    peak_memory_mib: float | None = None
    max_logit_difference: float | None = None  # against hf_vit, float32 eager


def benchmark_config(preset: str, num_labels: int) -> HfViTConfig:
    """The preset with what transformers' ViT lacks switched off (stochastic depth, mean pooling), so that every
    contender runs the same network; dropout is zero in all presets."""
    return preset_config(preset, num_labels=num_labels, drop_path_rate=0.0, pooling="cls")


def reference_model(config: HfViTConfig, seed: int) -> HfViTForImageClassification:
    torch.manual_seed(seed)
    model = HfViTForImageClassification(config)
    with torch.no_grad():  # hf_vit's head starts at zero, which would make the logits check vacuous
        model.classifier.weight.normal_(0.0, config.initializer_range)
        model.classifier.bias.normal_(0.0, config.initializer_range)
    return model


def build_contenders(
    model: HfViTForImageClassification, names, folder: str, onednn_linear: bool | str = "auto"
) -> dict[str, torch.nn.Module]:
    """Each contender holding exactly `model`'s weights; `onednn_linear` as `hf_vit.speedups.apply` takes it."""
    from .convert import export_timm, export_transformers

    built = {}
    for name in names:
        if name == "hf_vit":
            built[name] = copy.deepcopy(model)
            for change in apply(built[name], onednn_linear=onednn_linear):
                progress(f"hf_vit speed-up: {change}")
        elif name == "hf_vit-plain":
            built[name] = model
        elif name.startswith("transformers-"):
            attention = name.removeprefix("transformers-")
            built[name] = export_transformers(model, os.path.join(folder, attention), attn_implementation=attention)
        elif name == "timm":
            built[name] = export_timm(model)
        else:
            raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}.")
    return built


def logits_of(module: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    output = module(pixels)
    return output if isinstance(output, torch.Tensor) else output.logits


def logit_differences(contenders: dict[str, torch.nn.Module], config: HfViTConfig) -> dict[str, float]:
    """Max |logit difference| of each contender against hf_vit, float32 eager, on random images."""
    pixels = torch.randn(2, config.num_channels, *config.image_hw, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = {name: logits_of(module.eval(), pixels) for name, module in contenders.items()}
    reference = logits.get("hf_vit", next(iter(logits.values())))
    return {name: (value - reference).abs().max().item() for name, value in logits.items()}


def autocast(settings: Settings):
    if settings.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(settings.device, dtype=getattr(torch, settings.dtype))


def make_step(module: torch.nn.Module, mode: str, settings: Settings, pixels, labels) -> Callable[[], None]:
    """One benchmark step of `mode`, the same code for every contender. `module` may be compiled."""
    if mode == "inference":

        def inference_step():
            with torch.inference_mode(), autocast(settings):
                logits_of(module, pixels)

        return inference_step

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=True)

    def training_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(settings):
            logits = logits_of(module, pixels)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    return training_step


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_steps(settings: Settings) -> dict[str, tuple[Callable[[], None], int]]:
    """Square matrix multiplies large enough to reach the machine's peak rate, in the benchmark's dtype: torch.mm,
    and oneDNN's product where `hf_vit.speedups` can use it (CPU, float32). Name -> (step, FLOPs)."""
    size = 8192 if settings.device == "cuda" else 2048
    a, b = (torch.randn(size, size, device=settings.device, dtype=getattr(torch, settings.dtype)) for _ in range(2))
    steps = {MATMUL: (lambda: torch.mm(a, b), 2 * size**3)}
    if settings.device == "cpu" and settings.dtype == "float32" and ONEDNN_LINEAR is not None:
        steps[MATMUL_ONEDNN] = (lambda: ONEDNN_LINEAR(a, b, None), 2 * size**3)
    return steps


def timed(step: Callable[[], None], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def inputs(config: HfViTConfig, settings: Settings):
    generator = torch.Generator().manual_seed(settings.seed)
    pixels = torch.randn(settings.batch_size, config.num_channels, *config.image_hw, generator=generator)
    labels = torch.randint(0, max(config.num_labels, 1), (settings.batch_size,), generator=generator)
    return pixels.to(settings.device), labels.to(settings.device)


def prepare(module: torch.nn.Module, mode: str, settings: Settings) -> torch.nn.Module:
    """On the device, in `mode`, compiled if asked. Freezing (inference only: it needs weights that do not change)
    lets inductor treat weights as constants: folded, and on CPU prepacked for the BLAS and fused with their
    epilogues."""
    module = module.to(settings.device).train(mode == "training")
    if settings.freeze and mode == "inference":
        return torch.compile(module, options={"freezing": True})
    return torch.compile(module) if settings.compile else module


def executed_flops(name: str, module: torch.nn.Module, config: HfViTConfig) -> int:
    """Forward FLOPs per image a contender executes: hf_vit skips the last block's unread tokens."""
    if name.startswith("hf_vit"):
        return forward_flops(config, tokens_to_keep=module.tokens_read_by_heads())
    return forward_flops(config)


def run_rounds(contenders: dict[str, torch.nn.Module], config: HfViTConfig, settings: Settings) -> list[Result]:
    """Warm up, then time the contenders (and the matrix multiply) interleaved, round by round, per mode."""
    pixels, labels = inputs(config, settings)
    flops_per_image = forward_flops(config)
    executed = {name: executed_flops(name, module, config) for name, module in contenders.items()}
    matmuls = matmul_steps(settings)
    results = []
    for mode in settings.modes:
        steps = {name: make_step(prepare(module, mode, settings), mode, settings, pixels, labels)
                 for name, module in contenders.items()}  # fmt: skip
        steps.update({name: step for name, (step, _) in matmuls.items()})
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(settings.warmup):
                step()
            synchronize(settings.device)
            progress(f"{mode}: {name} warmed up in {time.perf_counter() - started:.1f} s (compilation included)")
        seconds: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(settings.repeats):
            for name, step in steps.items():
                seconds[name].append(timed(step, settings.device))
        matmul_rates = {name: flops / statistics.median(seconds[name]) for name, (_, flops) in matmuls.items()}
        matmul_seconds = {name: seconds.pop(name) for name in matmuls}
        matmul_rate = max(matmul_rates.values())
        images = settings.batch_size * (3 if mode == "training" else 1)  # a training step: 3 forwards' worth
        step_flops = flops_per_image * images
        mode_results = []
        for name, times in seconds.items():
            median = statistics.median(times)
            mode_results.append(
                Result(
                    contender=name,
                    mode=mode,
                    images_per_s=settings.batch_size / median,
                    seconds=times,
                    flops_per_s=step_flops / median,
                    matmul_fraction=step_flops / median / matmul_rate,
                    executed_matmul_fraction=executed[name] * images / median / matmul_rate,
                )
            )
        if settings.profile:
            for name in contenders:
                write_profile(steps[name], f"{mode}: {name}", settings)
        if settings.memory and settings.device == "cuda":
            for result in mode_results:
                result.peak_memory_mib = step_peak_memory(steps[result.contender], settings.device)
        for result in mode_results:
            progress(f"{mode}: {result.contender} {result.images_per_s:,.1f} images/s")
        ours = next((r for r in mode_results if r.contender == "hf_vit"), None)
        for result in mode_results:
            result.hf_vit_ratio = ours.images_per_s / result.images_per_s if ours else None
        results += mode_results
        results += [Result(contender=name, mode=mode, images_per_s=0.0, flops_per_s=rate,
                           matmul_fraction=rate / matmul_rate, executed_matmul_fraction=rate / matmul_rate,
                           seconds=matmul_seconds[name]) for name, rate in matmul_rates.items()]  # fmt: skip
    return results


def write_profile(step: Callable[[], None], title: str, settings: Settings, steps: int = 3) -> None:
    """Append the operators (kernels on CUDA) that take most of `steps` warmed-up steps to `settings.profile`:
    where the time goes, to compare contenders kernel by kernel."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if settings.device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronize(settings.device)
    sort_by = "self_cuda_time_total" if settings.device == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=25, max_name_column_width=90)
    with open(settings.profile, "a") as file:
        file.write(f"## {title}, {steps} steps\n\n{table}\n\n")


def progress(message: str) -> None:
    """On stderr as the run goes, so that a run stopped early (a time limit) still tells what it measured."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Peak memory: one fresh process per contender and mode, so that no earlier allocation hides or inflates it
# ----------------------------------------------------------------------------------------------------------------------


def _resident_high_water_reset() -> None:
    # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one.
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")


def _resident_kib(field_name: str) -> int:
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith(field_name + ":"))
    return int(line.split()[1])


def measure_memory_here(contender: str, mode: str, settings: Settings) -> float:
    """Peak memory (MiB) of a steady-state step of one contender above the memory held just before it (weights,
    optimizer state, compiled code): activations, gradients and workspaces, the part implementations differ in."""
    config = benchmark_config(settings.preset, settings.num_labels)
    with tempfile.TemporaryDirectory() as folder:
        module = build_contenders(
            reference_model(config, settings.seed), [contender], folder, ONEDNN_CHOICES[settings.onednn_linear]
        )[contender]
    pixels, labels = inputs(config, settings)
    step = make_step(prepare(module, mode, settings), mode, settings, pixels, labels)
    for _ in range(settings.warmup):  # compilation, lazy library set-up, optimizer state
        step()
    return step_peak_memory(step, settings.device)


def step_peak_memory(step: Callable[[], None], device: str) -> float:
    """Peak memory (MiB) of one call of a warmed-up `step` above what was held before it. On CPU this is only
    meaningful in a process whose malloc returns freed memory (see `measure_memory`)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = _resident_kib("VmRSS")
    _resident_high_water_reset()
    step()
    return (_resident_kib("VmHWM") - before) / 2**10


def measure_memory(contender: str, mode: str, settings: Settings) -> float:
    """`measure_memory_here` in a fresh Python process (CPU). Its malloc hands every block of 64 KiB or more back
    to the system when freed, so the resident set before a step holds no freed activations for the step to reuse.
    (CUDA's allocator statistics need no such care: `run_rounds` reads them in the benchmark's own process.)"""
    settings_json = json.dumps(asdict(settings))
    command = [sys.executable, "-m", "hf_vit.benchmark", "--memory-worker", contender, mode, settings_json]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {contender} ({mode}) failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------------
# The whole run, its table and the command line
# ----------------------------------------------------------------------------------------------------------------------


def retain_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the process instead of handing it back to the system.

    By default glibc returns large freed blocks, and the next step page-faults them back in: up to a tenth of a
    ViT step on CPU, varying with the heap's history (which model was built first, what ran just before) rather
    than with the implementation. Applied to the whole process, so to every contender alike; tcmalloc or jemalloc
    (what CPU inference guides recommend) behave the same way. False where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(
        libc.mallopt(option, value) == 1
        for option, value in ((m_mmap_threshold, 32 * 2**20), (m_trim_threshold, 2**30), (m_top_pad, 64 * 2**20))
    )


def configure(settings: Settings) -> None:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.device == "cpu" and settings.retain_freed_memory:
        settings.retain_freed_memory = retain_freed_memory()
    if settings.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32, for every contender alike
        torch.backends.cudnn.allow_tf32 = False


def run(settings: Settings) -> dict:
    """Build the contenders with the same weights, check their logits agree, time them, measure their memory."""
    configure(settings)
    config = benchmark_config(settings.preset, settings.num_labels)
    with tempfile.TemporaryDirectory() as folder:
        contenders = build_contenders(
            reference_model(config, settings.seed), settings.contenders, folder, ONEDNN_CHOICES[settings.onednn_linear]
        )
    differences = logit_differences(contenders, config)
    disagreeing = {name: value for name, value in differences.items() if value > LOGITS_TOLERANCE}
    if disagreeing:
        raise RuntimeError(f"contenders' logits differ from hf_vit's beyond {LOGITS_TOLERANCE}: {disagreeing}")
    results = run_rounds(contenders, config, settings)
    for result in results:
        if result.contender not in MATMULS:
            result.max_logit_difference = differences[result.contender]
            if settings.memory and settings.device == "cpu":
                result.peak_memory_mib = measure_memory(result.contender, result.mode, settings)
    return {
        "settings": asdict(settings),
        "flops_per_image": forward_flops(config),
        "environment": environment(settings),
        "results": [asdict(result) for result in results],
    }


def environment(settings: Settings) -> dict:
    import timm
    import transformers

    found = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if settings.device == "cuda":
        found["gpu"] = torch.cuda.get_device_name()
    return found


def markdown(report: dict) -> str:
    settings, env = report["settings"], report["environment"]
    lines = [
        f"{settings['preset']}, batch {settings['batch_size']}, {settings['device']}, {settings['dtype']}, "
        f"{'compiled' if settings['compile'] else 'eager'}"
        f"{' (inference with frozen weights)' if settings.get('freeze') else ''}"
        f"{', malloc keeps freed memory' if settings['retain_freed_memory'] and settings['device'] == 'cpu' else ''}; "
        f"{settings['repeats']} interleaved rounds after "
        f"{settings['warmup']} warm-up steps; torch {env['torch']}, transformers {env['transformers']}, "
        f"timm {env['timm']}, {env['threads']} threads{', ' + env['gpu'] if 'gpu' in env else ''}; "
        f"{report['flops_per_image'] / 1e9:.3f} GFLOP per image forward (training step: 3x). GFLOP/s counts these "
        "for every contender; 'executed' counts what each runs (hf_vit computes its last block for the tokens the "
        "head reads only).",
        "",
        "| mode | contender | images/s | hf_vit / this | GFLOP/s | of matmul rate | executed, of matmul rate "
        "| peak memory (MiB) | max Δlogit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if r["contender"] in MATMULS:
            library = "oneDNN" if r["contender"] == MATMUL_ONEDNN else "torch.mm"
            lines.append(
                f"| {r['mode']} | (matmul rate, {library}) | | | {r['flops_per_s'] / 1e9:,.1f} "
                f"| {r['matmul_fraction']:.0%} | {r['matmul_fraction']:.0%} | | |"
            )
            continue
        memory = f"{r['peak_memory_mib']:,.0f}" if r["peak_memory_mib"] is not None else "-"
        ratio = f"{r['hf_vit_ratio']:.2f}x" if r["hf_vit_ratio"] is not None else "-"
        lines.append(
            f"| {r['mode']} | {r['contender']} | {r['images_per_s']:,.1f} | {ratio} | {r['flops_per_s'] / 1e9:,.1f} "
            f"| {r['matmul_fraction']:.0%} | {r['executed_matmul_fraction']:.0%} | {memory} "
            f"| {r['max_logit_difference']:.1e} |"
        )
    return "\n".join(lines)


def parse_settings(argv: list[str] | None) -> tuple[Settings, str | None]:
    """The settings, and the path for the JSON report (if any)."""
    parser = CommandParser(
        prog="hf-vit benchmark", description="hf_vit against transformers' ViT (sdpa, eager) and timm, same weights."
    )
    parser.add_argument("--preset", default=Settings.preset, choices=sorted(PRESETS), metavar="NAME",
                        help="a preset of `hf-vit info`")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size, help="images per step")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where every contender runs")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="bfloat16: autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile every contender")
    parser.add_argument("--freeze", action="store_true", help="with --compile (implied): inference compiled with "
                        "inductor's weight freezing (weights as constants: folded, prepacked)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=Settings.repeats, help="timed rounds (median over them)")
    parser.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed steps per contender and mode")
    parser.add_argument("--num-labels", type=int, default=Settings.num_labels, help="classes of the head")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (None: torch's choice)")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS,
                        help="hf_vit: with hf_vit.speedups; hf_vit-plain: the Hub model file alone")  # fmt: skip
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="what to time")
    parser.add_argument("--onednn-linear", default="auto", choices=sorted(ONEDNN_CHOICES),
                        help="hf_vit's linears on oneDNN (auto: where hf_vit.speedups finds it faster)")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="CPU: leave glibc's malloc returning freed memory to the system (page faults in every step)",
    )
    parser.add_argument("--json", help="also write the report as JSON to this path")
    parser.add_argument("--profile", help="append each contender's torch.profiler table to this file")
    args = parser.parse_args(argv)
    settings = Settings(
        preset=args.preset,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile or args.freeze,
        freeze=args.freeze,
        repeats=args.repeats,
        warmup=args.warmup,
        num_labels=args.num_labels,
        threads=args.threads,
        contenders=tuple(args.contenders),
        modes=tuple(args.modes),
        memory=not args.no_memory,
        profile=args.profile,
        retain_freed_memory=not args.system_malloc,
        onednn_linear=args.onednn_linear,
    )
    return settings, args.json


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-worker"]:  # internal: one peak-memory measurement (see `measure_memory`)
        contender, mode, encoded = argv[1:4]
        fields = json.loads(encoded)
        fields.update(contenders=tuple(fields["contenders"]), modes=tuple(fields["modes"]), retain_freed_memory=False)
        settings = Settings(**fields)  # malloc as `measure_memory` set it, returning freed blocks
        configure(settings)
        print(measure_memory_here(contender, mode, settings))
        return 0
    settings, json_path = parse_settings(argv)
    report = run(settings)
    if json_path:
        with open(json_path, "w") as file:
            json.dump(report, file, indent=2)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
