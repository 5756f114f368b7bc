"""The query service and Compliance UI."""
