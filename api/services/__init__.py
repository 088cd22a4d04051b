"""The service layer: what routes and the worker call; keyword-only functions, no HTTP."""
