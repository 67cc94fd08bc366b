"""Internals of the synthetic call world; the public API is :mod:`callback_timing.simulation`
and :mod:`callback_timing.world`."""
