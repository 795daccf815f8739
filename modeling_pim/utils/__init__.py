"""
Plumbing shared by the entry points, light to import (no torch, no transformers): the one error path of the command
lines (`cli`) and the cache folder (`cache`).
"""
