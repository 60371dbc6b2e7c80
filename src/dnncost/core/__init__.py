"""The floor every other part stands on: errors, the version, the kinds of step, input specs, the
step itself, devices and threads, a model's own failure, and the environment a result carries.

Nothing here imports another dnncost package; everything else may import from here.
"""
