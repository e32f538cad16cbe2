"""The result cache: a filter's finished picture, kept by everything it depends on.

keys.py names a picture, entry.py packs it, backends.py stores it (a local
directory or Redis), results.py is what the server calls: lookups, background
stores, metrics, and faults that never fail a request; secret.py holds the
key that authenticates entries; indexes.py keeps dataset indexes on the same
backends, authenticated alike. May import the TF-free core and
`observability`; never `engine`, `serving` or the composition root.
"""
