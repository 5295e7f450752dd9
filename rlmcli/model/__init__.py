"""The model client: litellm and a direct OpenAI-protocol path, retries, routing and keys."""
