"""Integrations with web frameworks; each submodule imports its framework only when used."""
