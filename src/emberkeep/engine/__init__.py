"""Chunk -> keyed id -> dedup -> zstd -> AEAD -> pack (docs/design.md, "The shape")."""
