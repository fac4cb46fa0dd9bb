"""Records arriving between runs: the router, its state, lead matching and the route command on files."""
