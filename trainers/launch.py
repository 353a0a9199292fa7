"""Starting N training processes with `accelerate launch`, on GPUs or on a CPU-only machine.

On a CPU, `accelerate launch --cpu --num_processes N` silently runs ONE process. What works is
the multi-GPU launcher told to use the CPU: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes N --num_machines 1 ...`, which starts N processes joined by gloo (MULTI_CPU).
"""

import os
import shlex
import subprocess
import sys


def in_launched_process():
    """True inside a process started by `accelerate launch` or `torchrun`."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_PROCESS_INDEX" in os.environ


def has_gpu():
    import torch

    return torch.cuda.is_available()


def launch_command(num_processes, args, module="xmodal.trainers.cli", accelerate_config=None, port=None):
    """The `accelerate launch` command line running `python -m module *args` (or, with `module=None`, the
    script `args[0]` with `args[1:]`) in `num_processes` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", str(accelerate_config), "--num_processes", str(num_processes)]
    else:
        command += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"]
    if port is not None:
        command += ["--main_process_port", str(port)]
    if module is None:
        return command + [str(a) for a in args]
    return command + ["--module", module, *args]


def launch_environment(num_processes, base=None):
    """Environment for the launched processes: the CPU flag when there is no GPU, and threads per process."""
    environment = dict(os.environ if base is None else base)
    if not has_gpu():
        environment["ACCELERATE_USE_CPU"] = "1"
        cores = os.cpu_count() or 1
        environment.setdefault("OMP_NUM_THREADS", str(max(1, cores // num_processes)))
    return environment


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def relaunch(num_processes, args, accelerate_config=None):
    """Runs this command again in `num_processes` processes; returns their exit status."""
    command = launch_command(num_processes, args, accelerate_config=accelerate_config, port=free_port())
    print("Launching:", " ".join(command), flush=True)
    return subprocess.call(command, env=launch_environment(num_processes))


def run_training(config_file, overrides=(), resume=False, num_processes=None, accelerate_config=None,
                 prog="xmodal train"):
    """What `xmodal train` does (and `xmodal demo --train-if-missing`): reads and checks the config, starts
    `num_processes` processes when asked (each comes back here and trains), trains. Returns an exit code;
    an error the user can fix is one line on stderr (2: the config, 1: the data or the run)."""
    from .checkpointing import CheckpointError
    from .config import ConfigError, load_config
    from .data import DataError
    from .loop import TrainingDiverged, train

    overrides = list(overrides)
    try:
        config = load_config(config_file, overrides)
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    args = ["train", "--config", str(config_file), *[part for item in overrides for part in ("--set", item)]]
    if resume:
        args.append("--resume")
    processes = num_processes or config.training.num_processes
    if (processes > 1 or accelerate_config) and not in_launched_process():
        return relaunch(processes, args, accelerate_config)
    try:
        train(config, resume=resume, command="xmodal " + " ".join(shlex.quote(a) for a in args))
    except (ConfigError, DataError, ImportError) as error:  # fixable by the user: the config, the data, a package
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except (TrainingDiverged, CheckpointError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not (config.training.compile and is_compiler_error(error)):
            raise
        # torch.compile could not build the step here (no C++ compiler, an unsupported operator...): the model
        # itself is fine, and eager training runs the same steps
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        print(f"{prog}: training.compile failed ({type(error).__name__}: {reason}); train without it: --set "
              "training.compile=false", file=sys.stderr)
        return 2
    return 0


def is_compiler_error(error):
    """Whether `error` was raised by `torch.compile` (dynamo or inductor) rather than by the model's own code."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))
