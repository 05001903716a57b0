"""Data hub: ingest (with de-identification), catalogue, splits and statistics."""
