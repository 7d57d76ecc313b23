"""Shared test helpers: plain functions and classes that tests import (`from tests.support.zips import make_zip`).

Fixtures stay in the conftests (which may use these); no test imports another test module or a conftest.
  images     generated image bytes (solid colours, a decompression bomb) and class-per-folder file lists
  zips       dataset zips: synthetic shapes, arbitrary (hostile) members, a few classes of the built-in digits
  benchmarks fabricated benchmark folder trees (CUB, Cars196, SOP, In-Shop)
  app        test settings, the tiny run config, apps over a data folder (Stored, Trained), every API route
  server     a live `dmlscope serve` under uvicorn in a subprocess on a free loopback port
  polling    waiting for a run's status or a condition, reading a Server-Sent Events stream
  workers    the worker processes (torchrun's agent and ranks too) executing a run, found in /proc
  browser    helpers for the chromium tests (point positions, waiting for a map, a small HTTP client)
  reference  slow, obviously-correct reference loops for the metric-learning formulas
"""
