"""The local stack: embedded services and emulated AWS triggers. Never deployed."""
