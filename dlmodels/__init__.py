"""dlmodels: a small Keras-like library: spec -> PyTorch module, fit with callbacks, predict.

It knows nothing of HTTP, queues, databases or tracking servers; it imports only torch, numpy
and pydantic (scikit-learn, lazily, for the datasets that ship inside it).
"""
