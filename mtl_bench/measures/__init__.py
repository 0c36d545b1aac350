"""What the probe and the retention measures record, and the catalog that defines every measure once."""
