"""Importable apps (`module:attribute` naming a Durably instance) for the CLI and executor tests."""
