"""The policies: pure functions that decide, for one planned delivery, whether it goes now, later or not at all.

``decision`` holds the values they return and the ``Candidate`` they judge; ``config`` the operator's and the
user's settings; one module per policy (``consent``, ``suppression``, ``quiet_hours``, ``keywords``, ``dedup``,
``caps``). The stage runner that loads what they need and records what they decide is ``pipeline.policies``.
"""
