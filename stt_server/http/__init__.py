"""HTTP: routes, authentication, limits and the browser-facing rules, the OpenAPI document and the OpenAI wire shapes."""
