"""Where metrics go besides the run directory: Weights & Biases (`wandb_logger`)."""
