"""emberkeep: encrypted, deduplicating backups and disaster recovery for one site."""

__version__ = "0.1.0"
