"""The training and testing machinery around the model (networks: modules/; data loading: dataloader.py)."""
