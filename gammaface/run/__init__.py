"""What every stage runs inside: its context and record (`stage`), the workdir's file names
(`layout`) and MLflow tracking (`tracking`). Below the stages, above the libraries."""
