"""Training: resumable runs and runs trained together."""
