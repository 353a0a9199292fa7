"""What a training run reports as it goes: mean loss parts per log line, samples/s, the time spent waiting
for data, peak memory; to the log, the progress bar, TensorBoard and the run's history."""

import time

import torch


def log_step(accelerator, bar, window, progress, training, **values):
    """Mean loss parts since the last log line (over processes too), to TensorBoard, the bar and the history."""
    logs = window.reduce(accelerator)
    logs.update({k: v for k, v in values.items() if v is not None})
    progress.history.append({"step": progress.step, **logs})
    accelerator.log(logs, step=progress.step)
    if bar is not None:
        bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{logs['samples_per_second']:.0f}")
    else:
        accelerator.print(f"step {progress.step}/{training.max_steps}: loss={logs['loss']:.4f} "
                          f"samples/s={logs['samples_per_second']:.0f}", flush=True)


class DataClock:
    """Seconds spent waiting for batches: `timed(loader)` yields the loader's batches and adds up the time
    each `next()` took (reading, decoding, collating and moving to the device)."""

    def __init__(self):
        self.waited = 0.0

    def timed(self, loader):
        batches = iter(loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waited += time.perf_counter() - started
            yield batch


class LossWindow:
    """Sums of the loss parts over the batches since the last log line."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, outputs):
        """Adds the loss parts of one batch; a part that a light step does not compute is not counted."""
        for name, value in outputs.items():
            if name.endswith("loss") and value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + value.detach().float()
                self.counts[name] = self.counts.get(name, 0) + 1

    def reduce(self, accelerator):
        names = sorted(self.sums)
        values = torch.stack([self.sums[n] / self.counts[n] for n in names])
        values = accelerator.reduce(values.to(accelerator.device), reduction="mean")
        self.sums, self.counts = {}, {}
        return {name: float(v) for name, v in zip(names, values)}


def progress_bar(accelerator, training, initial):
    if not (training.progress_bar and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=training.max_steps, initial=initial, desc="train", dynamic_ncols=True, mininterval=1.0)


def flat_hparams(config):
    flat = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
        else:
            flat[section] = values
    return flat


def peak_rss_mib(accelerator):
    """Peak resident memory of the largest process so far (data, model, optimizer, activations), in MiB."""
    import resource

    peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0])  # Linux: KiB
    return round(float(accelerator.gather(peak).max()), 1)


