"""The op API: the fused ops (functional.py, registered by _ext.py and _registration.py with
their argument checks in _validation.py), their pure-PyTorch references (reference.py), and the
types they take (prior.MixturePrior, plans.Plan). It imports nothing above it."""
