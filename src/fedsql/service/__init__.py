"""`fedsql serve`: the coordinator as an Arrow Flight SQL service for analysts."""
