"""Internals of the synthetic call world; the public API is :mod:`callback_timing.simulate`
and :mod:`callback_timing.world`."""
