"""`dockyard`: Docker's command line. It reaches the engine only through the Engine API
(the same door the docker CLI uses); `dockyard registry serve` runs a registry server."""
