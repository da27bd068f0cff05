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


def test_bytes_lru_is_bounded_in_bytes():
    import numpy as np

    from core.cache import BytesLRU

    lru = BytesLRU(max_bytes=1000)
    lru.put("a", torch.zeros(100, dtype=torch.uint8))  # 100 B
    lru.put("b", np.zeros(400, np.uint8))  # 400 B
    assert lru.bytes == 500 and len(lru) == 2
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("c", (torch.zeros(150, dtype=torch.float32), {"info": 1}))  # 600 B + 64: evicts b, keeps a
    assert "b" not in lru and "a" in lru and "c" in lru and lru.bytes <= 1000
    lru.put("huge", torch.zeros(2000, dtype=torch.uint8))  # larger than the bound: not kept, nothing evicted
    assert "huge" not in lru and len(lru) == 2
    calls = []
    assert lru.get_or_compute("a", lambda: calls.append(1)) is not None and not calls
    many = BytesLRU(max_bytes=10_000)
    for i in range(100):  # a hundred tiny entries fit where an entry count of 16 would not matter
        many.put(str(i), torch.zeros(50, dtype=torch.uint8))
    assert len(many) == 100 and many.bytes == 5000
