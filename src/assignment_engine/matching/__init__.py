"""Rules evaluated on a book: territories of every account (or one record), segments, families, measures and tiers."""
