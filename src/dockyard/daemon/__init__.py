"""The engine behind dockyardd: configuration, the image store and events, no HTTP."""
