"""Writing the lists into Redis for every EIR node: snapshot imports into new
generations, change feeds, rollback and status (``s13eir lists ...``, ``s13eir sync``).

The key layout is :mod:`s13eir.lists.redis_layout`; see :mod:`s13eir.sync.writer`.
Import the modules themselves: this face is empty, so that the pure ones
(``deltas``, ``changeset``) come without redis.
"""
