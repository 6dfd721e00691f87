"""The lowest layer: rules and small helpers that every other layer shares, each with one home.

Pure (no I/O, no network imports); nothing here imports from another layer of the package.
"""
