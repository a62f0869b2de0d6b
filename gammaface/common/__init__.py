"""What every layer uses and that knows nothing of the project's data: the one-sentence error,
seeds, progress lines, the YAML reader and image files. Imports nothing of gammaface."""
