"""The HTTP and gRPC front of the runtime: FastAPI app, OpenAI API, KServe v2 / Triton, metrics."""
