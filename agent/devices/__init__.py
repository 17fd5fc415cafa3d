"""Device backends: one module per vendor behind the DeviceBackend protocol."""
