"""The byte-bounded LRU behind the word cache and the state cache (skembed._lru.ByteLRU)."""

from __future__ import annotations

import threading

from skembed._lru import ByteLRU


def test_least_recently_used_go_first_once_over_the_budget():
    lru = ByteLRU(max_bytes=10)
    for key in "abc":
        assert lru.put(key, key.upper(), nbytes=3)
    assert lru.get("a") == "A"  # a becomes the most recent: b is the least
    assert lru.put("d", "D", nbytes=3)  # 12 bytes: b goes
    assert lru.keys() == ["c", "a", "d"] and lru.nbytes == 9
    assert "b" not in lru and lru.get("b") is None
    assert lru["c"] == "C" and lru.keys()[0] == "c"  # [] leaves the order alone


def test_an_entry_over_the_whole_budget_is_refused_and_evicts_nothing():
    lru = ByteLRU(max_bytes=10)
    lru.put("a", 1, nbytes=6)
    assert not lru.put("big", 2, nbytes=11)
    assert lru.keys() == ["a"] and lru.nbytes == 6
    assert lru.put("exact", 3, nbytes=10)  # the budget itself fits: a goes
    assert lru.keys() == ["exact"] and lru.nbytes == 10


def test_putting_a_key_again_replaces_its_bytes_and_recency():
    lru = ByteLRU(max_bytes=10)
    lru.put("a", 1, nbytes=4)
    lru.put("b", 2, nbytes=4)
    lru.put("a", 3, nbytes=2)
    assert lru.keys() == ["b", "a"] and lru.nbytes == 6 and lru["a"] == 3


def test_put_many_evicts_once_at_the_end():
    lru = ByteLRU(max_bytes=10)
    assert lru.put_many([("a", 1, 4), ("b", 2, 4), ("c", 3, 4), ("huge", 4, 99)]) == 3
    assert lru.keys() == ["b", "c"] and lru.nbytes == 8


def test_get_many_moves_the_found_keys_to_the_end_in_order():
    lru = ByteLRU(max_bytes=100)
    lru.put_many([(k, k, 1) for k in "abcd"])
    assert lru.get_many(["c", "x", "a"]) == ["c", None, "a"]
    assert lru.keys() == ["b", "d", "c", "a"]


def test_resize_pop_where_and_clear():
    lru = ByteLRU(max_bytes=100)
    lru.put_many([(i, i, 10) for i in range(6)])
    lru.resize(35)
    assert lru.keys() == [3, 4, 5] and lru.nbytes == 30 and lru.max_bytes == 35
    assert lru.pop_where(lambda value: value % 2 == 1) == 2
    assert lru.keys() == [4] and lru.nbytes == 10
    lru.clear()
    assert len(lru) == 0 and lru.nbytes == 0 and lru.keys() == []


def test_threads_keep_the_byte_count_exact():
    lru = ByteLRU(max_bytes=1000)

    def work(t):
        for i in range(2000):
            lru.put((t, i % 150), i, nbytes=1 + i % 7)
            lru.get_many([(t, i % 50), (1 - t, i % 50)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lru.nbytes == sum(1 + lru[key] % 7 for key in lru.keys()) <= 1000
