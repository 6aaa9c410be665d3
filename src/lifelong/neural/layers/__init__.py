"""Sequence mixers built on a memory: the Titans layers (MAC, MAG, MAL, LMM)."""
