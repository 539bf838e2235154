"""The API's routers, one module per resource; `broker.api.app` mounts them under /v1."""
