"""The distillation app: Lightning module, Hydra entry point, losses, callbacks, export."""
