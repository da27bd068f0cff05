import torch

from core.cache import DiskCache, tensor_hash


def test_round_trip_keys_and_corruption(tmp_path):
    cache = DiskCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3), "n": 1.5}

    k = cache.key("demo", video="abc", params={"a": 1})
    assert k != cache.key("demo", video="abc", params={"a": 2}) != cache.key("other", video="abc", params={"a": 1})
    v1 = cache.get_or_compute(k, compute)
    v2 = cache.get_or_compute(k, compute)
    assert len(calls) == 1 and torch.equal(v1["x"], v2["x"]) and v2["n"] == 1.5
    (tmp_path / f"{k}.pt").write_bytes(b"\x00garbage")  # a corrupt entry is recomputed, not a crash
    v3 = cache.get_or_compute(k, compute)
    assert len(calls) == 2 and torch.equal(v3["x"], v1["x"])


def test_disabled_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.setenv("VRD_CACHE_DIR", "off")
    off = DiskCache()
    assert off.root is None and off.get_or_compute("k", lambda: 7) == 7
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")  # unwritable even for root
    c = DiskCache(blocker / "sub")
    calls = []
    assert c.get_or_compute("k", lambda: calls.append(1) or 8) == 8  # cannot write: still the value
    assert c.get_or_compute("k", lambda: calls.append(1) or 8) == 8 and len(calls) == 2  # and no entry
    assert c.get("k") is None and blocker.read_text().startswith("a file")


def test_tensor_hash_is_content_based():
    a = torch.rand(2, 3)
    assert tensor_hash(a) == tensor_hash(a.clone()) != tensor_hash(a + 1e-3)
    assert tensor_hash(torch.zeros(2, 3)) != tensor_hash(torch.zeros(3, 2))
