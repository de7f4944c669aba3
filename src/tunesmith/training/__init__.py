"""The training run: Trainer wiring, methods (full/LoRA/freeze), callbacks, checkpoints, run directory."""
