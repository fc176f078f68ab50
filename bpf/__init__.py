"""The BPF C sources, shipped as package data: bcc compiles them when a sensor loads."""
