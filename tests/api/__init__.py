"""Tests of the HTTP API for ministry systems (broker/api)."""
