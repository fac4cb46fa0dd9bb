"""The book in memory: typed columns and cells, accounts, users and pairs, country and state codes."""
