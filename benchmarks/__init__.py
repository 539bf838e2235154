"""Benchmarks: `python -m benchmarks.e2e` compares the signed pipeline with raw aio-pika and FastStream."""
