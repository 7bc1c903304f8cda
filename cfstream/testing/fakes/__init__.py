"""Fake services for connector tests, benchmarks and ``cfstream demo``: one module per service.

Each ``cfstream.testing.fakes.<service>`` module offers ``mount(api)`` and ``demo_config(base_url)``
(see :mod:`cfstream.demo`). None of them needs pytest.
"""
