"""Asset definitions, one module per group (ingest, baskets, personalization, analytics, vectors)."""
