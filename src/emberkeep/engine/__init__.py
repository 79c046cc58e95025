"""Chunk -> keyed id -> dedup -> zstd -> AEAD -> pack (DESIGN.md, "The shape")."""
