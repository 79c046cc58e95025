"""The demo: a generated candle shop, backed up, checked and restored with the real CLI."""
