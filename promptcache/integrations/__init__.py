"""Integrations: one caching HTTP transport for the OpenAI and Anthropic SDKs, and ``CachedAgent``."""
