"""Ingest a dump spread over several machines with Ray: each stage runs where its files are."""
