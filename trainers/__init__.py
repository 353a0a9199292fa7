"""Training and evaluation for XModal models: the Accelerate loop, Trainer and PEFT glue, metrics, CLI."""
