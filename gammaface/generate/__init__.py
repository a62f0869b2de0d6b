"""Balanced generation: the plan of shards, how a component is drawn from, the actor pool."""
