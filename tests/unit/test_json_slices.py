"""How PostgreSQL inserts heavy with JSON are cut (``store.driver.json_slices``): by the bytes of their
documents, each shared document measured once, small rows never cut."""

from __future__ import annotations

from clarion.store import driver


def test_small_rows_stay_one_statement() -> None:
    rows = [{"id": i, "data": {"n": i}, "detail": None} for i in range(5000)]
    assert [len(s) for s in driver.json_slices(rows)] == [5000]


def test_rows_sharing_a_large_document_are_cut_by_its_size() -> None:
    shared = {"b": ["x" * 100] * 6000}  # ≈ 630 KB as JSON
    rows = [{"id": i, "data": shared} for i in range(100)]
    slices = driver.json_slices(rows, limit=1 << 20)
    assert [len(s) for s in slices] == [1] * 100  # two would pass 1 MiB
    assert [r for s in slices for r in s] == rows  # every row once, in order
    assert [len(s) for s in driver.json_slices(rows, limit=4 << 20)] == [6] * 16 + [4]


def test_one_row_larger_than_the_limit_is_a_slice_of_its_own() -> None:
    big = {"data": ["y" * 2_000_000]}
    rows = [{"data": {"a": 1}}, big, {"data": {"a": 2}}]
    assert [len(s) for s in driver.json_slices(rows, limit=1 << 20)] == [1, 1, 1]
