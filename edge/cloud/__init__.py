"""Cloud link over MQTT (shared/spec/mqtt.md) and the cloud simulator used to exercise it."""
