"""Model training, tracking (MLflow) and drift checks."""
