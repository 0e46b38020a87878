"""The model of the world shared by producer and worker: config, schema, pricing, budget, limiter, suite, scoring, providers."""
