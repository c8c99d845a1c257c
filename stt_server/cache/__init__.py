"""The three-tier cache (memory, disk, SQLite) and its content-addressed keys."""
