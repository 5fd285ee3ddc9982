"""Fine-tuning: data sets, the job store, the job manager and the training process."""
