"""Data: the source catalog, readers, fetching with sha256 checks, and the mixture builder."""
