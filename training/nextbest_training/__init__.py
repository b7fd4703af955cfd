"""The Lightning side of nextbest: DataModule, LightningModule, CLI entry, MLflow export and promotion."""
