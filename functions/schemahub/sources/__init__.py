"""Exchange sources: HTTP behaviour, exchange specs and one paging module per style."""
