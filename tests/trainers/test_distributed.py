"""Two real processes (accelerate launch, gloo on CPU) against one: same loss, same gradients, same training."""

import subprocess

import pytest
import torch
from safetensors.torch import load_file

import xmodal
from xmodal.trainers import checkpointing
from xmodal.trainers.launch import free_port, launch_command, launch_environment

from tests.modeling.tiny import tiny_config, tiny_inputs

from .helpers import REPO, run_cli, tiny_config as tiny_run_config, write_yaml

HERE = REPO / "tests" / "trainers"


def test_launch_command_runs_n_processes_on_cpu():
    command = launch_command(2, ["train", "--config", "c.yaml"])
    assert command[command.index("--num_processes") + 1] == "2" and "--multi_gpu" in command
    assert "--cpu" not in command  # `--cpu --num_processes 2` silently runs one process
    if not torch.cuda.is_available():
        assert launch_environment(2)["ACCELERATE_USE_CPU"] == "1"


def test_one_collective_a_step_tells_every_process_of_a_bad_loss_and_the_main_clock(tmp_path):
    """The loop's per-step collective: a NaN on one rank stops both; every rank runs by rank 0's clock."""
    command = launch_command(2, [HERE / "step_state_torchrun.py", tmp_path], module=None, port=free_port())
    result = subprocess.run(command, env=launch_environment(2, base={**__import__("os").environ,
                                                                     "OMP_NUM_THREADS": "1"}),
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(2):
        told = torch.load(tmp_path / f"rank{rank}.pt")  # [(diverged, seconds)] of the three calls
        (diverged, clock), (diverged_at_nan, _), (diverged_unsynced, own_clock) = told
        assert not diverged and diverged_at_nan and not diverged_unsynced  # rank 1's NaN reaches rank 0 too
        assert 107.0 <= clock < 130.0  # 7 s before + rank 0's 100 s (and the time the call took), on both ranks
        expected = 107.0 if rank == 0 else 12.0  # unsynchronised: each rank's own clock
        assert expected <= own_clock < expected + 23.0


# Caption hashes whose overlaps cross the ranks' halves: sample 1 (rank 0) says what is true of sample 6's scene
# (rank 1) and sample 5 (rank 1) of sample 0's; rank 0 has two true captions per scene, rank 1 three.
HASHES = {"caption_hashes": torch.tensor([10, 11, 12, 13, 14, 15, 16, 17]),
          "true_caption_hashes": torch.tensor([[10, 15, -1], [11, -1, -1], [12, -1, -1], [13, -1, -1],
                                               [14, -1, -1], [15, -1, -1], [16, 11, 20], [17, -1, -1]])}


@pytest.mark.slow
@pytest.mark.parametrize("contrastive_loss, hashes", [("clip", False), ("clip", True), ("sigmoid", True)])
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path, contrastive_loss, hashes):
    config = {"contrastive_loss": contrastive_loss}
    torch.manual_seed(0)
    model = xmodal.XModalModel(tiny_config(**config))
    batch = {**tiny_inputs(batch_size=8, seed=3), **(HASHES if hashes else {})}
    torch.save({"config": config, "state_dict": model.state_dict(), "batch": batch}, tmp_path / "setup.pt")

    command = launch_command(2, [HERE / "distributed_equivalence.py", tmp_path], module=None, port=free_port())
    result = subprocess.run(command, env=launch_environment(2, base={**__import__("os").environ,
                                                                     "OMP_NUM_THREADS": "1"}),
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert not torch.allclose(ranks[0]["local_loss"], ranks[1]["local_loss"])  # each rank had its own half

    output = model(**batch, return_loss=True)  # one process, the whole batch
    output.loss.backward()
    # Two halves summed over gloo against one sum: the order of fp32 additions differs, so a few ulp apart.
    torch.testing.assert_close(ranks[0]["loss"], output.loss.detach(), rtol=1e-6, atol=1e-6)
    for name, parameter in model.named_parameters():
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], parameter.grad, rtol=1e-4, atol=1e-5, msg=name)


def _train(folder, *flags):
    """A 3-step contrastive run of the tiny scenes through `xmodal train`; the saved weights."""
    values = tiny_run_config(folder, task="contrastive", modalities=("text", "image"),
                             training={"max_steps": 3, "batch_size": 16, "learning_rate": 1e-3,
                                       "save_every": 3, "warmup_steps": 0, "mixed_precision": "no"})
    result = run_cli("train", "--config", write_yaml(values, folder.with_suffix(".yaml")), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(folder / "model" / "model.safetensors"), result


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_scenes):
    """The reference both multi-process runs must end at."""
    return _train(tmp_path_factory.mktemp("one") / "run", "--num-processes", 1)[0]


@pytest.mark.slow
def test_cli_num_processes_trains_like_one_process(tmp_path, one_process):
    weights, _ = _train(tmp_path / "p2", "--num-processes", 2)
    # Every process saved its own RNG state: two processes really ran.
    state = checkpointing.latest_state(tmp_path / "p2")
    assert sorted(p.name for p in state.glob("rng_state_*.json")) == ["rng_state_0.json", "rng_state_1.json"]
    for name in one_process:
        torch.testing.assert_close(weights[name], one_process[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_the_fsdp_config_on_cpu_processes_says_it_runs_ddp_and_trains_like_one_process(tmp_path, one_process):
    """configs/accelerate/fsdp.yaml as shipped, on 2 CPU processes. Accelerate 1.x enables FSDP only for
    accelerator devices (its state keeps MULTI_CPU on a CPU), so the run is data parallel: the log says so
    instead of pretending, and the run ends with the one-process weights. FSDP proper is checked on the
    device machine when a session has one."""
    weights, result = _train(tmp_path / "fsdp", "--accelerate-config", REPO / "configs" / "accelerate" / "fsdp.yaml",
                             "--num-processes", 2)
    assert "Training on 2 process(es), MULTI_CPU" in result.stdout
    assert "asks for FSDP, which Accelerate does not run on a CPU: training with MULTI_CPU" in result.stdout
    assert checkpointing.latest_state(tmp_path / "fsdp") is not None
    for key in one_process:
        torch.testing.assert_close(weights[key], one_process[key], rtol=0, atol=1e-5, msg=key)


def test_deepspeed_zero2_needs_a_gpu_machine():
    """DeepSpeed is not installed here: its wheel builds CUDA kernels, and ZeRO needs an accelerator
    backend (`deepspeed.accelerator`), which a CPU-only torch wheel does not give. The config is checked by
    the device machine when a session has one; here the test says so and checks the config reads."""
    import yaml

    config = yaml.safe_load((REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml").read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] == 2
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (it builds CUDA kernels; not in the "
                                            "extras): ZeRO-2 is checked on the GPU machine")
