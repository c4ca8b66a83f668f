"""Equipment lists: list-file parsers, the in-memory snapshot index and its Bloom filter.

Pure data structures: loading is synchronous and takes paths; the stores decide
when to (re)load and swap snapshots.
"""
