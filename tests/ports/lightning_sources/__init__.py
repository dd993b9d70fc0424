"""Public Lightning code, copied verbatim; only the import lines name the engine and the stand-ins.

Each file names its repository, path, commit and license. ruff leaves this folder as it is.
"""
