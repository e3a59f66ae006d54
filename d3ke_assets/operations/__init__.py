"""Running the platform: local servers on loopback, scale-out executors, fault handling."""
