"""Core: settings types and hashes, column names, data, models, atomic files."""
