"""The engine: continuous-batching scheduler, paged KV cache with prefix caching, sequences, sampling,
speculative decoding and the compute thread that runs model steps off the event loop."""
