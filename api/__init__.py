"""The HTTP service and the data layer (models, sessions, settings) the worker shares."""
