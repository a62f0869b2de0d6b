import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)
# the exported dataset is loaded from disk; nothing may reach for the Hugging Face hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OBJECT_STORE_BYTES = 150 * 1024 * 1024


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session, with a capped object store."""
    import ray

    if not ray.is_initialized():
        from gammaface.ray_runtime import local_state_api

        ray.init(address="local", num_cpus=2, object_store_memory=OBJECT_STORE_BYTES,
                 configure_logging=False, **local_state_api())
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
