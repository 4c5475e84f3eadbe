"""Operator commands, run against whatever DATABASE_URL names."""
