"""The Docker Engine API over HTTP: a thin translation onto dockyard.daemon.Engine."""
