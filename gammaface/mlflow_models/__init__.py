"""MLflow "models from code": each file here is what `mlflow.pyfunc.load_model` executes to
rebuild a model from its safetensors files, so a registered model loads without unpickling
anything. The files are logged as they are; they import gammaface at load time."""
