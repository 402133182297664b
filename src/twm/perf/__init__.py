"""Instruments: what an update costs (``bench``, ``op_count``, ``flops``) and what the networks hold (``info``)."""
