"""The training and testing machinery around the model: flags, run folders, validation, schedules, checkpoints, media, metrics, plots, torchrun, CUDA graphs, and the synthetic dataset generator."""
