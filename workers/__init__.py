"""Delivery workers: the Dramatiq actor that signs, POSTs, records and backs off."""
