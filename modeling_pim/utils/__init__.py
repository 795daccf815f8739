"""Plumbing shared by the command-line entry points; light to import (no torch, no transformers)."""
