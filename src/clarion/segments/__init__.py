"""Segments: saved audience queries evaluated in memory.

``query`` parses and validates the JSON condition tree, ``index`` holds every user's tags, attributes, behaviour and
ID-list memberships as bitmaps and NumPy columns, and ``evaluate`` turns a query into a bitmap of rows, a count, a
sample or the user ids for fan-out. Nothing here touches the database: the store fills the index through its bulk
loaders at start and keeps it current with ``upsert``/``delete``/``track``.
"""
