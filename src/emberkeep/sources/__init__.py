"""What is backed up. A source walks its data depth-first and yields events."""
