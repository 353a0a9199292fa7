"""`xmodal inspect`: build a model from a config, save it, reload it, and show its size and a forward pass."""

import tempfile
import time

import torch


def parameter_counts(model):
    """Trainable parameters per top-level part (towers, projections, fusion, heads) and in total."""
    counts = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        key = parts[1] if parts[0] == model.base_model_prefix and len(parts) > 1 else parts[0]
        counts[key] = counts.get(key, 0) + parameter.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def dummy_batch(config, batch_size=4, text_length=16, num_frames=300, seed=0):
    """Random inputs shaped for `config`'s built-in towers."""
    generator = torch.Generator().manual_seed(seed)
    batch = {}
    if config.text_config is not None:
        length = min(text_length, getattr(config.text_config, "max_position_embeddings", text_length))
        batch["input_ids"] = torch.randint(3, config.text_config.vocab_size, (batch_size, length), generator=generator)
        batch["attention_mask"] = torch.ones(batch_size, length, dtype=torch.long)
        if config.decoder_config is not None:
            batch["labels"] = batch["input_ids"].clone()
    if config.vision_config is not None:
        vision = config.vision_config
        batch["pixel_values"] = torch.randn(batch_size, vision.num_channels, vision.image_size, vision.image_size,
                                            generator=generator)
    if config.audio_config is not None:
        audio = config.audio_config
        frames = min(num_frames, getattr(audio, "max_input_frames", num_frames))
        batch["input_features"] = torch.randn(batch_size, audio.num_mel_bins, frames, generator=generator)
        batch["feature_attention_mask"] = torch.ones(batch_size, frames, dtype=torch.long)
    return batch


def inspect_model(config=None, model_class=None, batch_size=8, steps=3):
    """Builds, saves, reloads and times the model; returns a dict of what it printed."""
    from xmodal import XModalConfig, XModalForPreTraining

    config = config or XModalConfig()
    model_class = model_class or XModalForPreTraining
    torch.manual_seed(0)
    model = model_class(config)
    counts = parameter_counts(model)
    batch = dummy_batch(config, batch_size)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        reloaded = model_class.from_pretrained(folder)
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        # Matching samples hard negatives at random: the same seed gives the same draws.
        torch.manual_seed(1)
        expected = model(**batch).loss
        torch.manual_seed(1)
        same = torch.equal(expected, reloaded(**batch).loss)
    reloaded.train()
    optimizer = torch.optim.AdamW(reloaded.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = reloaded(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    step_time = sorted(times[1:])[len(times[1:]) // 2]
    parts = {k: float(v.detach()) for k, v in out.items() if k.endswith("loss") and v is not None}
    return {"parameters": counts, "reload_identical": same, "losses": parts,
            "forward_backward_seconds": step_time, "batch_size": batch_size}


def main(args):
    result = inspect_model(batch_size=args.batch_size)
    print("Parameters (trainable):")
    for name, count in result["parameters"].items():
        print(f"  {name:<20} {count / 1e6:8.3f} M")
    print(f"Save -> reload identical outputs: {result['reload_identical']}")
    print("Forward pass losses: " + ", ".join(f"{k}={v:.4f}" for k, v in result["losses"].items()))
    print(f"Forward+backward+step, batch {result['batch_size']}: {result['forward_backward_seconds'] * 1000:.0f} ms "
          f"(median of 3, {torch.get_num_threads()} threads)")
    return 0
