"""The repository format: keys, packs, index, snapshots, leases, check, prune."""
