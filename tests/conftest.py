import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(2)
os.environ.setdefault("VRD_DEVICE", "cpu")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's cache."""
    d = tmp_path_factory.mktemp("vrd-cache")
    old = os.environ.get("VRD_CACHE_DIR")
    os.environ["VRD_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("VRD_CACHE_DIR", None)
    else:
        os.environ["VRD_CACHE_DIR"] = old


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")
