"""Running pipelines elsewhere than the local event loop (``cfstream.distributed.ray``)."""
