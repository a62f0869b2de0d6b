"""The stages: one module each, each with one public `run(ctx: StageContext) -> StageResult`.

A stage reads the artifacts of the stages it needs (by the paths `layout` spells), writes only
its own folder, calls Ray and logs to MLflow; the work itself is done by the libraries below
(`data`, `diffusion`, `latents`, `gmm`, `classifiers`, `generate`, `downstream`, `metrics`).
The pipeline decides which stages run and writes each one's `stage.json` after it returns.
"""
