"""Test support: real components (socat pty pairs, Mosquitto, pymodbus servers) started by tests."""
