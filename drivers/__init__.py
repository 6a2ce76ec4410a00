"""Device drivers: one module per device family or reader, each owning its pydantic config model."""
