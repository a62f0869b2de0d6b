"""Datasets: the attribute registry, intersection cells, manifests, and the SynthFaces, FFHQ and
FairFace loaders, each validating its input at the door."""
