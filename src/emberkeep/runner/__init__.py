"""Jobs: each public function runs one job for the CLI (and later the scheduler)."""
