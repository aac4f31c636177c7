"""Dockyard's OCI runtime: an OCI bundle in, an isolated process out.

`dockyard.runtime.container.Runtime` is the library; `dockyard-runtime` (cli.py)
is runc's command line over it.
"""
