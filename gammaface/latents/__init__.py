"""Harvesting x_{t*}: real images noised forward, or DDPM samples stopped on the way down."""
