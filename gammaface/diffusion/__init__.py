"""The DDPM: UNet presets, the Ray Train loop, and a sampler that stops at or starts from t*."""
